"""`finetune`: a new head (or more) trained on a zip or folder of class folders, written as a bundle."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.catalog import OFFLINE_DEFAULT
from core.cli.common import add_runtime_option, load, progress_to_stderr, read_file
from core.finetune.bundle import export_bundle
from core.finetune.config import TrainConfig
from core.finetune.data import dataset_from_folder, dataset_from_zip
from core.finetune.threshold import NOT_SURE
from core.finetune.train import train


def run_finetune(args: argparse.Namespace) -> int:
    if Path(args.data).is_dir():
        dataset = dataset_from_folder(args.data)
    else:
        dataset = dataset_from_zip(read_file(args.data, "data"))
    for skipped in dataset.skipped:
        print(f"skipped: {skipped.name}: {skipped.reason}", file=sys.stderr)
    for warning in dataset.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    dataset.validate()
    config = TrainConfig(mode=args.mode, epochs=args.epochs or (30 if args.mode == "fast" else 5))
    backbone = load(args.backbone, args)
    trained = train(backbone, dataset, config, progress=progress_to_stderr if args.format == "table" else None)
    out = Path(args.out or f"zooscope-{args.backbone}-{len(trained.classes)}classes.zip")
    out.write_bytes(export_bundle(trained))
    val_size = int(trained.metrics.per_class_frame()["support"].sum())
    report = {
        "classes": trained.classes,
        "train_size": len(dataset.items) - val_size,
        "val_size": val_size,
        "val_accuracy": trained.val_accuracy,
        "epochs_run": trained.epochs_run,
        "threshold": trained.threshold,
        "bundle": str(out),
    }
    if args.format == "json":
        print(json.dumps(report, indent=2))
    else:
        print(
            f"{len(trained.classes)} classes, {report['train_size']} training / {report['val_size']} validation images"
        )
        print(f"validation accuracy {trained.val_accuracy:.1%} after {trained.epochs_run} epochs")
        print(f"answers below {trained.threshold:.0%} top-1 probability read '{NOT_SURE}'")
        print(f"bundle written to {out}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    finetune = commands.add_parser("finetune", help="train a new head on a zip of class folders")
    finetune.add_argument("data", metavar="DATA", help="a zip of class folders, or a folder of class folders")
    finetune.add_argument("--backbone", default=OFFLINE_DEFAULT, help=f"catalogue name (default {OFFLINE_DEFAULT})")
    finetune.add_argument("--epochs", type=int, help="default: 30 (fast), 5 (finetune)")
    finetune.add_argument("--mode", choices=("fast", "finetune"), default="fast")
    finetune.add_argument("--out", metavar="BUNDLE.zip", help="where to write the bundle")
    finetune.add_argument("--format", choices=("table", "json"), default="table")
    add_runtime_option(finetune)
    finetune.set_defaults(run=run_finetune)
