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
from core.embedding import Embedder, embed_encoded, embedder_for
from core.engines import Model, load_classifier
from core.errors import ImageError, ZooScopeError
from core.feature_files import read_parquet, to_parquet
from core.features import (
    DEFAULT_DUPLICATE_THRESHOLD,
    Embeddings,
    embed,
    find_duplicates,
    group_similarity,
    most_similar,
)
from core.finetune.bundle import export_bundle, import_bundle
from core.finetune.config import TrainConfig
from core.finetune.data import dataset_from_folder, dataset_from_zip
from core.finetune.threshold import NOT_SURE, check_threshold, predictions_with_threshold, with_threshold
from core.finetune.train import train
from core.finetune.trained import TrainedModel
from core.images import decode_image
from core.loading import load_model
from core.predict import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_TOP_K,
    MAX_TOP_K,
    Classification,
    Failure,
    classify_files,
    predictions_frame,
)
from core.preprocessing import decode_side
from core.runtime import ENGINE_LABELS, RUNTIME_ENV, RUNTIMES, parse_runtime, pick_device
from core.sources import SourceSet, from_paths
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
    config = TrainConfig(mode=args.mode, epochs=args.epochs or (30 if args.mode == "fast" else 5))
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


def _embedder(name: str, args: argparse.Namespace) -> Embedder:
    return embedder_for(_load(name, args), progress=_progress)


def _embed_sources(paths: Sequence[str], args: argparse.Namespace) -> Embeddings:
    """Every image in `paths` embedded by --model; skipped and unreadable files reported on stderr."""
    found: SourceSet = from_paths(paths)
    for skipped in found.skipped:
        print(f"skipped: {skipped.name}: {skipped.reason}", file=sys.stderr)
    if not found.images:
        raise ZooScopeError(f"No images to embed: {', '.join(paths)} holds no image files.")
    embeddings = embed(_embedder(args.model, args), found, progress=_progress)
    for failure in embeddings.failures:
        print(f"error: {failure.file}: {failure.error}", file=sys.stderr)
    if not len(embeddings):
        raise ZooScopeError(f"None of the {len(found.images):,} files could be read as an image.")
    return embeddings


def run_embed(args: argparse.Namespace) -> int:
    embeddings = _embed_sources(args.sources, args)
    out = Path(args.out)
    try:
        out.write_bytes(to_parquet(embeddings))
    except OSError as error:
        raise ZooScopeError(f"Could not write {out}: {error.strerror or error}.") from error
    failed = f"; {len(embeddings.failures):,} could not be read" if embeddings.failures else ""
    print(
        f"{len(embeddings):,} images embedded by {embeddings.model} ({embeddings.dimensions} numbers each, "
        f"{ENGINE_LABELS[embeddings.runtime]}){failed}; written to {out}"
    )
    return 0


def run_similar(args: argparse.Namespace) -> int:
    embeddings = read_parquet(args.file)
    model = args.model or embeddings.model
    if not model:
        raise ZooScopeError(f"{args.file} does not say which model made it; give it with --model.")
    if not len(embeddings):
        raise ZooScopeError(f"{args.file} holds no embeddings to search.")
    try:
        data = Path(args.query).read_bytes()
    except OSError as error:
        raise ZooScopeError(f"Could not read {args.query}: {error.strerror or error}.") from error
    (query,) = embed_encoded(_embedder(model, args), [data])
    if isinstance(query, ImageError):
        raise ZooScopeError(f"{args.query}: {query}")
    if query.vector.shape[0] != embeddings.dimensions:
        raise ZooScopeError(
            f"{model} gives {query.vector.shape[0]} numbers per image, but {args.file} holds "
            f"{embeddings.dimensions}: it was made by another model."
        )
    found = most_similar(embeddings, query.vector, args.k)
    if args.format == "json":
        print(json.dumps([neighbour.as_json() for neighbour in found], indent=2))
    else:
        print(f"most similar to {args.query} among {len(embeddings):,} images ({model}, cosine similarity):")
        for rank, neighbour in enumerate(found, start=1):
            print(f"  {rank:>2}. {neighbour.similarity:6.3f}  {neighbour.file}")
    return 0


def run_duplicates(args: argparse.Namespace) -> int:
    embeddings = _embed_sources(args.sources, args)
    groups = find_duplicates(embeddings, args.threshold)
    named = [[embeddings.files[index] for index in group] for group in groups]
    if args.format == "json":
        print(json.dumps({"threshold": args.threshold, "groups": named}, indent=2))
        return 0
    if not groups:
        print(f"no near-duplicates among {len(embeddings):,} images at similarity {args.threshold:g} or more")
    for number, (group, files) in enumerate(zip(groups, named, strict=True), start=1):
        closest = group_similarity(embeddings, group)
        print(f"group {number}: {len(files)} images, linked at similarity {args.threshold:g} or more "
              f"(its least similar pair: {closest:.3f})")  # fmt: skip
        for file in files:
            print(f"  {file}")
    return 0


def _similarity(value: str) -> float:
    threshold = float(value)
    if not 0.0 < threshold <= 1.0:
        raise argparse.ArgumentTypeError("the threshold is a cosine similarity above 0 and at most 1")
    return threshold


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("give a whole number of at least 1")
    return number


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


def _batch_size(value: str) -> int:
    size = int(value)
    if size < 1:
        raise argparse.ArgumentTypeError("the batch size must be at least 1")
    return size


class _ProgressBar:
    """A tqdm bar on stderr for long work's progress(done, total, message), where a person watches."""

    def __init__(self, description: str, unit: str):
        self.description = description
        self.unit = unit
        self.bar = None

    def __call__(self, done: int, total: int, message: str) -> None:
        if not sys.stderr.isatty():
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.description, unit=self.unit, file=sys.stderr, dynamic_ncols=True)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_batch(args: argparse.Namespace) -> int:
    from core.batch.run import run_batch as batch
    from core.batch.work import BatchJob

    job = BatchJob(args.kind, args.model, runtime=args.runtime, top_k=args.top_k, batch_size=args.batch_size)
    bar = _ProgressBar(f"{args.kind} ({args.model})", "file")
    try:
        report = batch(job, args.source, args.out, engine=args.engine, address=args.address, resume=args.resume,
                       progress=bar)  # fmt: skip
    finally:
        bar.close()
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.format == "json":
        print(json.dumps({**report.as_json(), "out": args.out}, indent=2))
    else:
        verb = "classified" if args.kind == "classify" else "embedded"
        engine = ENGINE_LABELS.get(report.runtime, report.runtime)
        print(
            f"{report.done} files read ({report.done - report.errors} {verb}, {report.errors} errors as rows), "
            f"{report.skipped} already in {args.out}; it holds {report.rows} rows."
        )
        if report.done:
            print(f"{report.seconds:.1f} s, {report.per_second:.1f} files/s ({args.engine} engine, {engine}).")
    return 1 if report.done and report.errors == report.done else 0


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

    finetune = commands.add_parser("finetune", help="train a new head on a zip of class folders")
    finetune.add_argument("data", metavar="DATA", help="a zip of class folders, or a folder of class folders")
    finetune.add_argument("--backbone", default=OFFLINE_DEFAULT, help=f"catalogue name (default {OFFLINE_DEFAULT})")
    finetune.add_argument("--epochs", type=int, help="default: 30 (fast), 5 (finetune)")
    finetune.add_argument("--mode", choices=("fast", "finetune"), default="fast")
    finetune.add_argument("--out", metavar="BUNDLE.zip", help="where to write the bundle")
    finetune.add_argument("--format", choices=("table", "json"), default="table")
    add_runtime_option(finetune)
    finetune.set_defaults(run=run_finetune)

    sources_help = "image files, folders (class folders give labels) or zips of class folders"
    embed_parser = commands.add_parser("embed", help="embeddings (the penultimate layer) of images, as Parquet")
    embed_parser.add_argument("sources", nargs="+", metavar="SOURCE", help=sources_help)
    embed_parser.add_argument("--model", default=OFFLINE_DEFAULT, help=f"catalogue name (default {OFFLINE_DEFAULT})")
    embed_parser.add_argument("--out", required=True, metavar="FILE.parquet", help="where to write the embeddings")
    add_runtime_option(embed_parser)
    embed_parser.set_defaults(run=run_embed)

    similar = commands.add_parser("similar", help="the images of an embeddings file most similar to a photo")
    similar.add_argument("file", metavar="FILE.parquet", help="written by embed")
    similar.add_argument("--query", required=True, metavar="IMAGE", help="the photo to search for")
    similar.add_argument("--k", type=_positive, default=5, help="how many to list (default 5)")
    similar.add_argument("--model", help="the model that made FILE (default: the one FILE names)")
    similar.add_argument("--format", choices=("table", "json"), default="table")
    add_runtime_option(similar)
    similar.set_defaults(run=run_similar)

    duplicates = commands.add_parser("duplicates", help="groups of near-duplicate images")
    duplicates.add_argument("sources", nargs="+", metavar="SOURCE", help=sources_help)
    duplicates.add_argument("--model", default=OFFLINE_DEFAULT, help=f"catalogue name (default {OFFLINE_DEFAULT})")
    duplicates.add_argument(
        "--threshold",
        type=_similarity,
        default=DEFAULT_DUPLICATE_THRESHOLD,
        help=f"cosine similarity at which two images are near-duplicates (default {DEFAULT_DUPLICATE_THRESHOLD}, "
        "measured: see the README)",
    )
    duplicates.add_argument("--format", choices=("table", "json"), default="table")
    add_runtime_option(duplicates)
    duplicates.set_defaults(run=run_duplicates)

    inspect = commands.add_parser("inspect", help="a model's stages, shapes, parameters, GFLOPS and skip connections")
    inspect.add_argument("model", metavar="MODEL", help="catalogue name (no weights needed)")
    inspect.add_argument("--format", choices=("table", "json"), default="table")
    inspect.add_argument("--image", metavar="PATH", help="a photo to run through the model (needs its weights)")
    inspect.add_argument("--save-maps", metavar="FILE.npz", help="with --image: each stage's mean activation map")
    inspect.set_defaults(run=run_inspect)

    batch = commands.add_parser(
        "batch", help="classify or embed every image of a folder, a glob or a bucket into Parquet (local or Ray)"
    )
    batch.add_argument("kind", choices=("classify", "embed"))
    batch.add_argument("source", metavar="SOURCE", help="a folder, a glob, a file, or a URI (s3://bucket/photos/)")
    batch.add_argument("--out", required=True, metavar="OUT.parquet", help="a folder of Parquet files, made if missing")
    batch.add_argument("--model", default=OFFLINE_DEFAULT, help=f"catalogue name (default {OFFLINE_DEFAULT})")
    batch.add_argument("--engine", choices=("local", "ray"), default="local")
    batch.add_argument(
        "--address", help="with --engine ray: join the Ray cluster there (auto, or HOST:6379); default: start Ray here"
    )
    batch.add_argument("--batch-size", type=_batch_size, default=DEFAULT_BATCH_SIZE, help="images per forward pass")
    batch.add_argument("--top-k", type=_top_k, default=DEFAULT_TOP_K, help=f"classify: 1..{MAX_TOP_K}")
    batch.add_argument("--resume", action="store_true", help="skip the files already in OUT, add the rest")
    batch.add_argument("--format", choices=("table", "json"), default="table", help="the summary's format")
    add_runtime_option(batch)
    batch.set_defaults(run=run_batch)
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
