"""Command line over the same functions as the app: `python -m core models|classify|compare ...`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from core import weights
from core.anatomy import anatomy
from core.catalog import OFFLINE_DEFAULT, all_specs, curated_specs, get_spec
from core.classifier import Classifier
from core.compare import compare_files
from core.engines import Model, load_classifier
from core.errors import ImageError, ZooScopeError
from core.finetune.augment import DEFAULT_TRAIN_SIZE
from core.finetune.bundle import export_bundle, import_bundle
from core.finetune.config import MODE_DEFAULTS, MODES, TrainConfig
from core.finetune.data import dataset_from_folder, dataset_from_zip
from core.finetune.depth import DEPTHS
from core.finetune.threshold import NOT_SURE, check_threshold, predictions_with_threshold, with_threshold
from core.finetune.train import train
from core.finetune.trained import TrainedModel
from core.images import decode_image
from core.loading import load_model
from core.predict import DEFAULT_TOP_K, MAX_TOP_K, Classification, Failure, classify_files, predictions_frame
from core.preprocessing import decode_side
from core.runtime import ENGINE_LABELS, RUNTIME_ENV, RUNTIMES, parse_runtime, pick_device
from core.stage_maps import stage_maps

# The bundled offline models: `compare` works with no network (the web page defaults differ).
COMPARE_DEFAULT = "efficientnet_lite0,efficientnet_lite1,efficientnet_lite2"


def _top_k(value: str) -> int:
    k = int(value)
    if not 1 <= k <= MAX_TOP_K:
        raise argparse.ArgumentTypeError(f"top-k must be between 1 and {MAX_TOP_K}")
    return k


def run_models(args: argparse.Namespace) -> int:
    specs = all_specs().values() if args.all else curated_specs()
    rows = [{**spec.row(), "available_offline": weights.is_available(spec)} for spec in specs]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        print(pd.DataFrame(rows).to_string(index=False))
    return 0


def _model_names(value: str) -> list[str]:
    names = list(dict.fromkeys(name.strip() for name in value.split(",") if name.strip()))
    if not names:
        raise argparse.ArgumentTypeError("give at least one model name")
    return names


def _read_inputs(paths: Sequence[str]) -> list[tuple[str, bytes] | Failure]:
    inputs: list[tuple[str, bytes] | Failure] = []
    for path in paths:
        try:
            inputs.append((path, Path(path).read_bytes()))
        except OSError as error:
            inputs.append(Failure(file=path, error=f"Could not read the file: {error.strerror or error}."))
    return inputs


def _threshold(value: str) -> float:
    try:
        return check_threshold(float(value))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _progress(done: int, total: int, message: str) -> None:
    """First use of a model in ONNX Runtime exports it (seconds): say so where a person watches."""
    if sys.stderr.isatty():
        _progress_to_stderr(done, total, message)


def _load(name: str, args: argparse.Namespace) -> Model:
    """A catalogue model in the runtime `--runtime` asks for (else ZOOSCOPE_RUNTIME, else auto)."""
    return load_classifier(name, pick_device(), runtime_choice=args.runtime, progress=_progress)


def _bundle(path: str, backbone: Callable[[str], Model]) -> TrainedModel:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ZooScopeError(f"Could not read the bundle {path}: {error.strerror or error}.") from error
    return import_bundle(data, loaded_for=backbone)


def _classifier(args: argparse.Namespace) -> tuple[Classifier, float | None]:
    """The catalogue model, or a fine-tuned bundle on top of its backbone with its "not sure" threshold
    (the bundle's own unless --threshold says otherwise)."""
    if args.bundle is None:
        if args.threshold is not None:
            raise ZooScopeError("--threshold applies to a fine-tuned model: give it with --bundle.")
        return _load(args.model, args), None
    backbones: dict[str, Model] = {}

    def backbone(name: str) -> Model:
        if name not in backbones:
            backbones[name] = _load(name, args)
        return backbones[name]

    trained = _bundle(args.bundle, backbone)
    threshold = trained.threshold if args.threshold is None else args.threshold
    return trained.classifier(backbone(trained.backbone)), threshold


def _runtime_of(model: Classifier) -> str:
    return getattr(model, "runtime", "torch")


def run_classify(args: argparse.Namespace) -> int:
    inputs = _read_inputs(args.images)
    model, threshold = _classifier(args)
    readable = [item for item in inputs if not isinstance(item, Failure)]
    classified = iter(classify_files(model, readable, k=args.top_k))
    results = [item if isinstance(item, Failure) else next(classified) for item in inputs]
    if threshold is not None:
        results = with_threshold(results, threshold)

    engine = _runtime_of(model)
    if args.format == "json":
        rows = [result.as_json() if isinstance(result, Failure) else {**result.as_json(), "runtime": engine}
                for result in results]  # fmt: skip
        print(json.dumps(rows, indent=2))
    elif args.format == "csv":
        frame = predictions_frame(results) if threshold is None else predictions_with_threshold(results, threshold)
        print(frame.to_csv(index=False), end="")
    else:
        for result in results:
            if isinstance(result, Failure):
                print(f"{result.file}: error: {result.error}")
                continue
            print(f"{result.file} ({result.model}, {ENGINE_LABELS[engine]}, {result.latency_ms:.1f} ms)")
            if result.below_threshold:
                print(f"  {NOT_SURE} (top-1 {result.top1.probability:.2%} is below the threshold {threshold:.2%})")
            for p in result.predictions:
                print(f"  {p.rank:>2}. {p.probability:7.2%}  {p.label}")
    for failure in (r for r in results if isinstance(r, Failure)):
        print(f"error: {failure.file}: {failure.error}", file=sys.stderr)
    return 0 if any(isinstance(r, Classification) for r in results) else 1


def run_compare(args: argparse.Namespace) -> int:
    inputs = _read_inputs(args.images)
    models = [_load(name, args) for name in args.models]
    readable = [item for item in inputs if not isinstance(item, Failure)]
    comparison = compare_files(models, readable, k=args.top_k)
    report = comparison.as_json()
    compared = iter(report["images"])
    report["images"] = [item.as_json() if isinstance(item, Failure) else next(compared) for item in inputs]

    if args.format == "json":
        print(json.dumps(report, indent=2))
    else:
        print(comparison.models_frame().round(2).to_string(index=False))
        if comparison.images:
            print()
            print(comparison.agreement_frame().round(3).to_string(index=False))
    for failure in (item for item in report["images"] if "error" in item):
        print(f"error: {failure['file']}: {failure['error']}", file=sys.stderr)
    return 0 if comparison.images else 1


def _progress_to_stderr(done: int, total: int, message: str) -> None:
    print(f"\r{message} ({done}/{total})", end="" if done < total else "\n", file=sys.stderr, flush=True)


def run_finetune(args: argparse.Namespace) -> int:
    if Path(args.data).is_dir():
        dataset = dataset_from_folder(args.data)
    else:
        try:
            data = Path(args.data).read_bytes()
        except OSError as error:
            raise ZooScopeError(f"Could not read {args.data}: {error.strerror or error}.") from error
        dataset = dataset_from_zip(data)
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
    backbone = _load(args.backbone, args)
    trained = train(backbone, dataset, config, progress=_progress_to_stderr if args.format == "table" else None)
    out = Path(args.out or f"zooscope-{args.backbone}-{len(trained.classes)}classes.zip")
    out.write_bytes(export_bundle(trained))
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


def add_runtime_option(parser: argparse.ArgumentParser) -> None:
    """`--runtime` for every command that runs a model (classify, compare, and the feature extraction
    of finetune). Checked in main(), so an unknown value gets the one-line error every command gives."""
    parser.add_argument(
        "--runtime",
        metavar="|".join(RUNTIMES),
        help=f"auto (default, or {RUNTIME_ENV}): ONNX Runtime on the CPU where its export is verified, else "
        "PyTorch; torch; onnx; int8 (ONNX Runtime, quantized: measured agreement and speed)",
    )


def _read_file(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ZooScopeError(f"Could not read the {what} {path}: {error.strerror or error}.") from error


def run_inspect(args: argparse.Namespace) -> int:
    if (args.image is None) != (args.save_maps is None):
        raise ZooScopeError("--image and --save-maps go together: the photo to look at and the .npz file to write.")
    found = anatomy(get_spec(args.model).name)
    if args.image is not None:
        data = _read_file(args.image, "image")
        try:
            picture = decode_image(data, min_side=decode_side([get_spec(args.model).transforms()]))
        except ImageError as error:
            raise ImageError(f"{args.image}: {error}") from None
        maps = stage_maps(load_model(args.model, pick_device()), picture)
        maps.save(args.save_maps)
        note = f"stage maps of {args.image} written to {args.save_maps} (input + {len(maps.stages)} stages)"
        print(note, file=sys.stderr if args.format == "json" else sys.stdout)
    if args.format == "json":
        print(json.dumps(found.as_json(), indent=2))
        return 0
    print(
        f"{found.model} ({found.family}): {found.params:,} parameters, {found.gflops:.2f} GFLOPS at "
        f"{found.input_size} x {found.input_size}, {found.skip_connections} skip connections, depth {found.depth}"
    )
    frame = found.stages_frame().drop(columns=["params_m"])
    print(frame.round({"gflops": 3}).to_string(index=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="ZooScope from the command line.")
    commands = parser.add_subparsers(dest="command", required=True)

    models = commands.add_parser("models", help="list the model catalogue")
    models.add_argument("--all", action="store_true", help="every torchvision classifier, not only the curated set")
    models.add_argument("--format", choices=("table", "json"), default="table")
    models.set_defaults(run=run_models)

    classify = commands.add_parser("classify", help="top-k predictions for image files")
    classify.add_argument("images", nargs="+", metavar="IMAGE")
    classify.add_argument("--model", default=OFFLINE_DEFAULT, help=f"catalogue name (default {OFFLINE_DEFAULT})")
    classify.add_argument("--top-k", type=_top_k, default=DEFAULT_TOP_K, help=f"1..{MAX_TOP_K}")
    classify.add_argument("--format", choices=("table", "csv", "json"), default="table")
    classify.add_argument("--bundle", metavar="BUNDLE.zip", help="classify with a fine-tuned bundle instead")
    classify.add_argument(
        "--threshold",
        type=_threshold,
        help="with --bundle: below this top-1 probability (0..1) the answer is 'not sure' (default: the bundle's)",
    )
    add_runtime_option(classify)
    classify.set_defaults(run=run_classify)

    compare = commands.add_parser("compare", help="several models on the same images: agreement and latency")
    compare.add_argument("images", nargs="+", metavar="IMAGE")
    compare.add_argument(
        "--models", type=_model_names, default=COMPARE_DEFAULT, help=f"comma-separated ({COMPARE_DEFAULT})"
    )
    compare.add_argument("--top-k", type=_top_k, default=DEFAULT_TOP_K, help=f"1..{MAX_TOP_K}")
    compare.add_argument("--format", choices=("table", "json"), default="table")
    add_runtime_option(compare)
    compare.set_defaults(run=run_compare)

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
        help=f"finetune mode: training resolution (default {DEFAULT_TRAIN_SIZE} if the model takes it, else its own)",
    )
    finetune.add_argument("--flip", action="store_true", help="random horizontal flips (not for text or digits)")
    finetune.add_argument("--adapt-batchnorm", action="store_true", help="let batch-norm statistics adapt")
    finetune.add_argument("--out", metavar="BUNDLE.zip", help="where to write the bundle")
    finetune.add_argument("--format", choices=("table", "json"), default="table")
    add_runtime_option(finetune)
    finetune.set_defaults(run=run_finetune)

    inspect = commands.add_parser("inspect", help="a model's stages, shapes, parameters, GFLOPS and skip connections")
    inspect.add_argument("model", metavar="MODEL", help="catalogue name (no weights needed)")
    inspect.add_argument("--format", choices=("table", "json"), default="table")
    inspect.add_argument("--image", metavar="PATH", help="a photo to run through the model (needs its weights)")
    inspect.add_argument("--save-maps", metavar="FILE.npz", help="with --image: each stage's mean activation map")
    inspect.set_defaults(run=run_inspect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        if getattr(args, "runtime", None) is not None:
            try:
                args.runtime = parse_runtime(args.runtime)
            except ValueError as error:
                raise ZooScopeError(str(error)) from None
        return run(args)
    except ZooScopeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
