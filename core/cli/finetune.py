"""`finetune`: a new head (or more) trained on a zip or folder of class folders, written as a bundle."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.cli.common import add_runtime_option, load, progress_to_stderr, read_file
from core.datasets.labelled import dataset_from_folder, dataset_from_zip
from core.errors import ZooScopeError
from core.finetune.bundle import export_bundle
from core.finetune.config import MODE_DEFAULTS, MODES, TrainConfig
from core.finetune.depth import DEPTHS
from core.finetune.threshold import NOT_SURE
from core.finetune.train import train
from core.models.catalog import OFFLINE_DEFAULT
from core.models.keys import ModelKey


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
    if args.mode == "fast" and args.unfreeze not in (None, "head"):
        raise ZooScopeError("--unfreeze trains part of the backbone, which only --mode finetune does.")
    settings = {"epochs": args.epochs, "lr": args.lr, "unfreeze": args.unfreeze, "train_size": args.train_size}
    config = TrainConfig(
        mode=args.mode,
        flip=args.flip,
        adapt_batchnorm=args.adapt_batchnorm,
        **{name: value for name, value in settings.items() if value is not None},
    )
    backbone = load(ModelKey(args.backbone), args)
    trained = train(
        backbone.torch,
        dataset,
        config,
        progress=progress_to_stderr if args.format == "table" else None,
        runtime=backbone.runtime,
    )
    out = Path(args.out or f"zooscope-{args.backbone}-{len(trained.classes)}classes.zip")
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
        "epochs_run": trained.epochs_run,
        "best_epoch": trained.best_epoch,
        "seconds": round(trained.seconds, 3),
        "threshold": trained.threshold,
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
        print(f"answers below {trained.threshold:.0%} top-1 probability read '{NOT_SURE}'")
        print(f"bundle written to {out}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    finetune = commands.add_parser("finetune", help="train a new head (or more) on a zip or folder of class folders")
    finetune.add_argument("data", metavar="DATA", help="a zip of class folders, or a folder of class folders")
    finetune.add_argument("--backbone", default=OFFLINE_DEFAULT, help=f"catalogue name (default {OFFLINE_DEFAULT})")
    finetune.add_argument("--mode", choices=MODES, default="fast", help="fast: the head on frozen features (seconds)")
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
    finetune.add_argument("--flip", action="store_true", help="random horizontal flips (not for text or digits)")
    finetune.add_argument("--adapt-batchnorm", action="store_true", help="let batch-norm statistics adapt")
    finetune.add_argument("--out", metavar="BUNDLE.zip", help="where to write the bundle")
    finetune.add_argument("--format", choices=("table", "json"), default="table")
    add_runtime_option(finetune)
    finetune.set_defaults(run=run_finetune)
