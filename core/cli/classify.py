"""`classify` (one model, or a fine-tuned bundle with its "not sure" threshold) and `compare`
(several models on the same images)."""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial

from core.classify.classifier import Classifier
from core.classify.compare import compare_files
from core.classify.predict import DEFAULT_TOP_K, MAX_TOP_K, Classification, Failure, classify_files, predictions_frame
from core.cli.common import add_runtime_option, add_weights_option, load, model_key, read_file, read_inputs, top_k
from core.engines.handle import ModelHandle
from core.errors import ZooScopeError
from core.finetune.bundle import import_bundle
from core.finetune.familiarity import NOT_SURE_UNLIKE
from core.finetune.threshold import NOT_SURE, check_threshold, predictions_with_threshold, with_threshold
from core.finetune.trained import TrainedClassifier
from core.models.catalog import OFFLINE_DEFAULT
from core.models.keys import ModelKey
from core.runtime import ENGINE_LABELS

# The bundled offline models: `compare` works with no network (the web page defaults differ).
COMPARE_DEFAULT = "efficientnet_lite0,efficientnet_lite1,efficientnet_lite2"


def model_names(value: str) -> list[str]:
    names = list(dict.fromkeys(name.strip() for name in value.split(",") if name.strip()))
    if not names:
        raise argparse.ArgumentTypeError("give at least one model name")
    return names


def threshold_value(value: str) -> float:
    try:
        return check_threshold(float(value))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def classifier(args: argparse.Namespace) -> tuple[Classifier, float | None]:
    """The catalogue model, or a fine-tuned bundle on top of its backbone with its "not sure" threshold
    (the bundle's own unless --threshold says otherwise)."""
    if args.bundle is None:
        if args.threshold is not None:
            raise ZooScopeError("--threshold applies to a fine-tuned model: give it with --bundle.")
        return load(model_key(args.model, args.weights), args), None
    if args.weights is not None:
        raise ZooScopeError("--weights applies to a catalogue model: a bundle names the weights it was trained on.")
    backbones: dict[ModelKey, ModelHandle] = {}

    def backbone(key: ModelKey) -> ModelHandle:
        if key not in backbones:
            backbones[key] = load(key, args)
        return backbones[key]

    trained = import_bundle(read_file(args.bundle, "bundle"), loaded_for=lambda key: backbone(key).torch)
    threshold = trained.threshold if args.threshold is None else args.threshold
    shared = backbone(trained.backbone_key)
    return trained.classifier(shared.torch, runtime=shared.runtime), threshold


def run_classify(args: argparse.Namespace) -> int:
    inputs = read_inputs(args.images)
    model, threshold = classifier(args)
    readable = [item for item in inputs if not isinstance(item, Failure)]
    # A fine-tuned model also says how alike each photo is to its training images (core.finetune.familiarity).
    classify = model.classify_files if isinstance(model, TrainedClassifier) else partial(classify_files, model)
    classified = iter(classify(readable, k=args.top_k))
    results = [item if isinstance(item, Failure) else next(classified) for item in inputs]
    if threshold is not None:
        results = with_threshold(results, threshold)

    # A catalogue model says which engine ran it; a fine-tuned model is reported as PyTorch (its head runs there).
    engine = model.runtime if isinstance(model, ModelHandle) else "torch"
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
            if result.unlike_training:
                alike = f"its nearest training image is {result.similarity:.2f} alike, below {result.min_similarity}"
                print(f"  {NOT_SURE_UNLIKE} ({alike})")
            elif result.below_threshold:
                print(f"  {NOT_SURE} (top-1 {result.top1.probability:.2%} is below the threshold {threshold:.2%})")
            for p in result.predictions:
                print(f"  {p.rank:>2}. {p.probability:7.2%}  {p.label}")
    for failure in (r for r in results if isinstance(r, Failure)):
        print(f"error: {failure.file}: {failure.error}", file=sys.stderr)
    return 0 if any(isinstance(r, Classification) for r in results) else 1


def run_compare(args: argparse.Namespace) -> int:
    inputs = read_inputs(args.images)
    keys = [model_key(name, args.weights) for name in args.models]  # every name checked before any loads
    models = [load(key, args) for key in keys]
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


def register(commands: argparse._SubParsersAction) -> None:
    classify = commands.add_parser("classify", help="top-k predictions for image files")
    classify.add_argument("images", nargs="+", metavar="IMAGE")
    classify.add_argument("--model", default=OFFLINE_DEFAULT, help=f"catalogue name (default {OFFLINE_DEFAULT})")
    classify.add_argument("--top-k", type=top_k, default=DEFAULT_TOP_K, help=f"1..{MAX_TOP_K}")
    classify.add_argument("--format", choices=("table", "csv", "json"), default="table")
    classify.add_argument("--bundle", metavar="BUNDLE.zip", help="classify with a fine-tuned bundle instead")
    classify.add_argument(
        "--threshold",
        type=threshold_value,
        help="with --bundle: below this top-1 probability (0..1) the answer is 'not sure' (default: the bundle's)",
    )
    add_runtime_option(classify)
    add_weights_option(classify)
    classify.set_defaults(run=run_classify)

    compare = commands.add_parser("compare", help="several models on the same images: agreement and latency")
    compare.add_argument("images", nargs="+", metavar="IMAGE")
    compare.add_argument(
        "--models", type=model_names, default=COMPARE_DEFAULT, help=f"comma-separated ({COMPARE_DEFAULT})"
    )
    compare.add_argument("--top-k", type=top_k, default=DEFAULT_TOP_K, help=f"1..{MAX_TOP_K}")
    compare.add_argument("--format", choices=("table", "json"), default="table")
    add_runtime_option(compare)
    add_weights_option(compare, "every model listed")
    compare.set_defaults(run=run_compare)
