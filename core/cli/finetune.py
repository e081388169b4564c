"""`finetune`: a new head (or more) trained on a zip or folder of class folders, written as a bundle."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.cli.common import add_runtime_option, add_weights_option, load, progress_to_stderr, read_file
from core.datasets.labelled import dataset_from_folder, dataset_from_zip
from core.errors import ZooScopeError
from core.features.stages import PENULTIMATE
from core.finetune.bundle import export_bundle
from core.finetune.config import MODE_DEFAULTS, MODES, TrainConfig
from core.finetune.depth import DEPTHS
from core.finetune.familiarity import NOT_SURE_UNLIKE
from core.finetune.features_from import resolve as resolve_features_from
from core.finetune.scratch import DEFAULT_BUDGET_S
from core.finetune.threshold import NOT_SURE
from core.finetune.train import train
from core.models.catalog import OFFLINE_DEFAULT
from core.models.keys import ModelKey


def run_finetune(args: argparse.Namespace) -> int:
    key = ModelKey(args.backbone, weights=args.weights)  # a name or version it lacks fails before any reading
    if Path(args.data).is_dir():
        dataset = dataset_from_folder(args.data)
    else:
        dataset = dataset_from_zip(read_file(args.data, "data"))
    for skipped in dataset.skipped:
        print(f"skipped: {skipped.name}: {skipped.reason}", file=sys.stderr)
    for warning in dataset.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    dataset.validate()
    if args.mode == "fast" and args.unfreeze not in (None, "head"):
        raise ZooScopeError("--unfreeze trains part of the backbone, which only --mode finetune does.")
    if args.mode == "scratch" and args.unfreeze is not None:
        raise ZooScopeError("--mode scratch trains the whole network: leave out --unfreeze.")
    if args.seconds is not None and args.mode != "scratch":
        raise ZooScopeError("--seconds is the time budget of --mode scratch.")
    settings = {"epochs": args.epochs, "lr": args.lr, "unfreeze": args.unfreeze, "train_size": args.train_size}
    if args.mode == "scratch":
        settings["time_budget_s"] = DEFAULT_BUDGET_S if args.seconds is None else args.seconds
    config = TrainConfig(
        mode=args.mode,
        flip=args.flip,
        adapt_batchnorm=args.adapt_batchnorm,
        features_from=args.features_from,
        **{name: value for name, value in settings.items() if value is not None},
    )
    backbone = load(key, args)
    talk = progress_to_stderr if args.format == "table" else None
    config, probes = resolve_features_from(backbone.torch, dataset, config, progress=talk)
    trained = train(
        backbone.torch,
        dataset,
        config,
        progress=progress_to_stderr if args.format == "table" else None,
        runtime=backbone.runtime,
    )
    out = Path(args.out or f"zooscope-{key.slug}-{len(trained.classes)}classes.zip")
    out.write_bytes(export_bundle(trained))
    assert trained.metrics is not None, "train() always evaluates on the validation images"
    val_size = int(trained.metrics.per_class_frame()["support"].sum())
    report = {
        "classes": trained.classes,
        "train_size": len(dataset.items) - val_size,
        "val_size": val_size,
        "val_accuracy": trained.val_accuracy,
        "mode": config.mode,
        "unfreeze": config.depth,
        "features_from": config.features_from or PENULTIMATE,
        **({"probes": probes.as_json()} if probes is not None else {}),
        "epochs_run": trained.epochs_run,
        "best_epoch": trained.best_epoch,
        "seconds": round(trained.seconds, 3),
        "threshold": trained.threshold,
        "min_similarity": trained.familiarity.min_similarity if trained.familiarity is not None else None,
        "bundle": str(out),
    }
    if args.format == "json":
        print(json.dumps(report, indent=2))
    else:
        print(
            f"{len(trained.classes)} classes, {report['train_size']} training / {report['val_size']} validation images"
        )
        print(
            f"validation accuracy {trained.val_accuracy:.1%} after {trained.epochs_run} epochs "
            f"({config.mode} mode, {config.depth} trained) in {trained.seconds:.1f} s"
        )
        if config.features_from not in (None, PENULTIMATE):
            picked = f", the probes' best of {len(probes.stages)} points" if probes is not None else ""
            print(f"features from {config.features_from} (the network cut there{picked})")
        print(f"answers below {trained.threshold:.0%} top-1 probability read '{NOT_SURE}'")
        if trained.familiarity is not None:
            minimum = trained.familiarity.min_similarity
            print(f"photos less than {minimum:.2f} alike to every training image read '{NOT_SURE_UNLIKE}'")
        print(f"bundle written to {out}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    finetune = commands.add_parser("finetune", help="train a new head (or more) on a zip or folder of class folders")
    finetune.add_argument("data", metavar="DATA", help="a zip of class folders, or a folder of class folders")
    finetune.add_argument("--backbone", default=OFFLINE_DEFAULT, help=f"catalogue name (default {OFFLINE_DEFAULT})")
    finetune.add_argument(
        "--mode",
        choices=MODES,
        default="fast",
        help="fast: the head on frozen features (seconds); scratch: the baseline, random weights, the whole network",
    )
    finetune.add_argument(
        "--seconds",
        type=float,
        help=f"scratch mode: the time budget, the epoch that crosses it the last (default {DEFAULT_BUDGET_S:g})",
    )
    finetune.add_argument(
        "--unfreeze",
        choices=DEPTHS,
        help=f"finetune mode: how much of the backbone trains (default {TrainConfig().unfreeze})",
    )
    defaults = ", ".join(f"{values['epochs']} ({mode})" for mode, values in MODE_DEFAULTS.items())
    finetune.add_argument("--epochs", type=int, help=f"at most (early stopping may end sooner); default: {defaults}")
    finetune.add_argument("--lr", type=float, help=f"the head's learning rate (default {TrainConfig().lr:g})")
    finetune.add_argument(
        "--train-size",
        type=int,
        help="finetune mode: training resolution (default: the model's own; lower is faster and less accurate)",
    )
    finetune.add_argument(
        "--features-from",
        metavar="best|STAGE",
        help="fast mode: train the head on a stage's features, the network cut there (best: the probes' pick "
        "on the training images; a stage: its module path, as `transfer` lists them)",
    )
    finetune.add_argument("--flip", action="store_true", help="random horizontal flips (not for text or digits)")
    finetune.add_argument("--adapt-batchnorm", action="store_true", help="let batch-norm statistics adapt")
    finetune.add_argument("--out", metavar="BUNDLE.zip", help="where to write the bundle")
    finetune.add_argument("--format", choices=("table", "json"), default="table")
    add_runtime_option(finetune)
    add_weights_option(finetune, "the backbone")
    finetune.set_defaults(run=run_finetune)
