"""Command line over the same functions as the app: `python -m core models|classify|compare ...`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from core import weights
from core.catalog import OFFLINE_DEFAULT, all_specs, curated_specs
from core.compare import compare_files
from core.errors import ZooScopeError
from core.loading import load_model
from core.predict import DEFAULT_TOP_K, MAX_TOP_K, Classification, Failure, classify_files, predictions_frame
from core.runtime import pick_device

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


def run_classify(args: argparse.Namespace) -> int:
    inputs = _read_inputs(args.images)
    model = load_model(args.model, pick_device())
    readable = [item for item in inputs if not isinstance(item, Failure)]
    classified = iter(classify_files(model, readable, k=args.top_k))
    results = [item if isinstance(item, Failure) else next(classified) for item in inputs]

    if args.format == "json":
        print(json.dumps([result.as_json() for result in results], indent=2))
    elif args.format == "csv":
        print(predictions_frame(results).to_csv(index=False), end="")
    else:
        for result in results:
            if isinstance(result, Failure):
                print(f"{result.file}: error: {result.error}")
                continue
            print(f"{result.file} ({result.model}, {result.latency_ms:.1f} ms)")
            for p in result.predictions:
                print(f"  {p.rank:>2}. {p.probability:7.2%}  {p.label}")
    for failure in (r for r in results if isinstance(r, Failure)):
        print(f"error: {failure.file}: {failure.error}", file=sys.stderr)
    return 0 if any(isinstance(r, Classification) for r in results) else 1


def run_compare(args: argparse.Namespace) -> int:
    inputs = _read_inputs(args.images)
    device = pick_device()
    models = [load_model(name, device) for name in args.models]
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
    classify.set_defaults(run=run_classify)

    compare = commands.add_parser("compare", help="several models on the same images: agreement and latency")
    compare.add_argument("images", nargs="+", metavar="IMAGE")
    compare.add_argument(
        "--models", type=_model_names, default=COMPARE_DEFAULT, help=f"comma-separated ({COMPARE_DEFAULT})"
    )
    compare.add_argument("--top-k", type=_top_k, default=DEFAULT_TOP_K, help=f"1..{MAX_TOP_K}")
    compare.add_argument("--format", choices=("table", "json"), default="table")
    compare.set_defaults(run=run_compare)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except ZooScopeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
