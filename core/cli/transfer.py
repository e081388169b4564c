"""`transfer`: which layer of one to three backbones fits a labelled set, by a linear probe per stage."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.cli.common import progress_to_stderr, read_file
from core.datasets.labelled import Dataset, dataset_from_folder, dataset_from_zip
from core.engines.choice import load_handle
from core.errors import ZooScopeError
from core.features.probes import ProbeResult, lesson, probe_backbone, transfer_json
from core.models.catalog import OFFLINE_DEFAULT
from core.models.keys import ModelKey
from core.runtime import pick_device

MAX_BACKBONES = 3


def read_dataset(data: str) -> Dataset:
    """DATA as `finetune` reads it: a folder of class folders, or a zip of them; skips said on stderr."""
    dataset = dataset_from_folder(data) if Path(data).is_dir() else dataset_from_zip(read_file(data, "data"))
    for skipped in dataset.skipped:
        print(f"skipped: {skipped.name}: {skipped.reason}", file=sys.stderr)
    for warning in dataset.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    dataset.validate()
    return dataset


def probe(name: str, dataset: Dataset) -> ProbeResult:
    # Hooks on every stage need PyTorch's modules: the probes never run in ONNX Runtime.
    backbone = load_handle(ModelKey(name), pick_device(), runtime_choice="torch", progress=progress_to_stderr)
    result = probe_backbone(backbone.torch, dataset.items, progress=progress_to_stderr)
    for position, why in result.failures:
        print(f"error: {dataset.items[position].name}: {why}", file=sys.stderr)
    return result


def print_table(results: list[ProbeResult]) -> None:
    for result in results:
        best = result.best.stage
        print(f"{result.model}: {result.images} images, {result.classes} classes, {result.folds}-fold linear probes")
        print(f"  {'stage':<16} {'depth':>5} {'dim':>5} {'accuracy':>9} {'± std':>6}")
        for score in result.stages:
            mark = "  <- best" if score.stage == best else ""
            print(f"  {score.stage:<16} {score.relative_depth:>5.2f} {score.dim:>5} "
                  f"{score.accuracy:>9.3f} {score.std:>6.3f}{mark}")  # fmt: skip
        print(f"  {lesson(result)}")


def run_transfer(args: argparse.Namespace) -> int:
    backbones = list(dict.fromkeys(args.backbone or [OFFLINE_DEFAULT]))
    if len(backbones) > MAX_BACKBONES:
        raise ZooScopeError(f"Give one to {MAX_BACKBONES} backbones, not {len(backbones)}.")
    dataset = read_dataset(args.data)
    results = [probe(name, dataset) for name in backbones]
    if args.format == "json":
        print(json.dumps(transfer_json(results), indent=2))
    else:
        print_table(results)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    transfer = commands.add_parser(
        "transfer", help="which layer of a backbone fits a labelled set: a linear probe on every stage"
    )
    transfer.add_argument("data", metavar="DATA", help="a zip of class folders, or a folder of class folders")
    transfer.add_argument(
        "--backbone",
        action="append",
        metavar="B",
        help=f"catalogue name; repeat for up to {MAX_BACKBONES} (default {OFFLINE_DEFAULT})",
    )
    transfer.add_argument("--format", choices=("table", "json"), default="table")
    transfer.set_defaults(run=run_transfer)
