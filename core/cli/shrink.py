"""`shrink`: a catalogue model or a fine-tuned bundle made smaller (int8, pruned, both), each variant measured
here, and any asked-for files written and verified in their own runtimes."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import Image

from core.cli.common import load, progress_to_stderr, read_file
from core.errors import ZooScopeError
from core.images import ImageError, decode_image
from core.models.keys import ModelKey

FORMAT_CHOICES = ("onnx", "ort", "pte")


def ratios(text: str) -> tuple[float, ...]:
    """ "0.3,0.5" -> (0.3, 0.5), each a share of the channels in (0, 1)."""
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of ratios like 0.3,0.5") from None
    if not values or any(not 0 < value < 1 for value in values):
        raise argparse.ArgumentTypeError(f"each ratio must be between 0 and 1 (exclusive), not {text!r}")
    return values


def formats(text: str) -> tuple[str, ...]:
    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [fmt for fmt in chosen if fmt not in FORMAT_CHOICES]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"formats are {', '.join(FORMAT_CHOICES)}, not {text!r}")
    return chosen


def photos_in(folder: str, what: str) -> list[Image.Image]:
    """Every image under `folder` (core.datasets.sources' walk), decoded; a file that is not one is reported and
    skipped."""
    from core.datasets.sources import from_folder

    root = Path(folder)
    if not root.is_dir():
        raise ZooScopeError(f"The {what} {folder} is not a folder of photos.")
    found = from_folder(root)
    for skipped in found.skipped:
        print(f"skipped: {skipped.name}: {skipped.reason}", file=sys.stderr)
    photos = []
    for source in found.images:
        try:
            photos.append(decode_image(source.read()))
        except (ImageError, OSError) as error:
            print(f"skipped: {source.name}: {error}", file=sys.stderr)
    if not photos:
        raise ZooScopeError(f"The {what} {folder} holds no photos ZooScope can read.")
    return photos


def _bundle_inputs(args: argparse.Namespace):
    from core.datasets.labelled import dataset_from_folder, dataset_from_zip
    from core.finetune.bundle import import_bundle
    from core.shrink.source import bundle_source, images_for_bundle

    if not args.recover_on:
        raise ZooScopeError(
            "A fine-tuned model is judged by its accuracy on the images it was trained on: give them with "
            "--recover-on DATA (the zip or folder of class folders Fine-tune used)."
        )
    if args.holdout:
        raise ZooScopeError(
            "--holdout is for catalogue models; a fine-tuned model is judged on DATA's validation split."
        )
    trained = import_bundle(read_file(args.source, "bundle"), loaded_for=lambda key: load(key, args).torch)
    loaded = load(trained.backbone_key, args).torch  # the same shared model (the pool keeps it)
    data = args.recover_on
    dataset = dataset_from_folder(data) if Path(data).is_dir() else dataset_from_zip(read_file(data, "data"))
    for skipped in dataset.skipped:
        print(f"skipped: {skipped.name}: {skipped.reason}", file=sys.stderr)
    return bundle_source(trained, loaded), images_for_bundle(trained, dataset, loaded.spec)


def _catalogue_inputs(args: argparse.Namespace):
    from core.shrink.source import catalogue_source, images_for_catalogue

    loaded = load(ModelKey(args.source), args).torch
    photos = photos_in(args.recover_on, "photos to recover on") if args.recover_on else []
    holdout = photos_in(args.holdout, "held-out photos") if args.holdout else []
    return catalogue_source(loaded), images_for_catalogue(photos, holdout)


def run_shrink(args: argparse.Namespace) -> int:
    from core.shrink.report import as_json, table
    from core.shrink.run import ShrinkOptions, ship_variant, shrink

    is_bundle = Path(args.source).suffix == ".zip" or Path(args.source).is_file()
    source, images = _bundle_inputs(args) if is_bundle else _catalogue_inputs(args)
    options = ShrinkOptions(ratios=args.prune or (), int8=args.int8, zeros=args.zeros, recover_epochs=args.epochs)
    out = Path(args.out)
    watched = progress_to_stderr if args.format == "table" else None
    result = shrink(source, images, out / "work", options, progress=watched)
    kept = [result.variant(args.keep)] if args.keep else result.variants
    shipped = {
        variant.name: ship_variant(
            result, variant.name, args.export, out, holdout=images.holdout, preprocess=source.preprocess
        )
        for variant in (kept if args.export else [])
    }
    if args.format == "json":
        print(json.dumps(as_json(result, shipped), indent=2))
        return 0
    frame = table(result)
    print(f"{result.source}: {result.images}")
    print(frame.to_string(index=False, float_format=lambda value: f"{value:.3g}"))
    for line in result.refused:
        print(f"not made: {line}")
    for name, files in shipped.items():
        for fmt, verified in files.items():
            print(
                f"{name} as {fmt}: {verified.path} ({verified.size_mb:.1f} MB), same top-1 as measured here on "
                f"{verified.same_top1} of {verified.images}, {verified.latency_ms:.1f} ms"
            )
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    shrink = commands.add_parser(
        "shrink", help="make a model smaller (int8, pruned) and measure each variant; write files a phone app loads"
    )
    shrink.add_argument("source", metavar="SOURCE", help="a catalogue model's name, or a fine-tuned bundle (.zip)")
    shrink.add_argument("--out", required=True, metavar="DIR", help="where the variants and files are written")
    shrink.add_argument(
        "--prune", type=ratios, metavar="R1,R2", help="channel-pruning ratios, e.g. 0.3,0.5 (each then recovered)"
    )
    shrink.add_argument("--int8", action="store_true", help="add int8 of the model and of each pruned variant")
    shrink.add_argument(
        "--zeros",
        action="store_true",
        help="add unstructured pruning (30%% of single weights zeroed) to show what it buys",
    )
    shrink.add_argument(
        "--recover-on",
        metavar="DATA",
        help="a bundle: its labelled zip or folder of class folders; a catalogue model: a folder of unlabelled photos "
        "to distil on and calibrate int8 with (default: the example photos' variations)",
    )
    shrink.add_argument(
        "--holdout",
        metavar="DIR",
        help="catalogue model: photos to judge agreement on (default: other example variations)",
    )
    shrink.add_argument("--epochs", type=int, default=4, help="recovery epochs after pruning (default 4)")
    shrink.add_argument(
        "--export", type=formats, metavar="FORMATS", help="onnx,ort,pte: files for every variant, verified"
    )
    shrink.add_argument(
        "--keep", metavar="VARIANT", help='with --export: only this variant\'s files, e.g. "pruned 50%% + int8"'
    )
    shrink.add_argument("--format", choices=("table", "json"), default="table")
    shrink.set_defaults(run=run_shrink, runtime="torch")  # pruning and export work on the PyTorch module
