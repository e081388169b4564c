"""What the commands share: argument types, the --runtime option, loading a model, reading files,
and progress on stderr where a person watches."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from core.classify.predict import MAX_TOP_K, Failure
from core.engines.choice import load_handle
from core.engines.handle import ModelHandle
from core.errors import ZooScopeError
from core.models.catalog import all_specs
from core.models.keys import ModelKey
from core.runtime import RUNTIME_ENV, RUNTIMES, pick_device


def top_k(value: str) -> int:
    k = int(value)
    if not 1 <= k <= MAX_TOP_K:
        raise argparse.ArgumentTypeError(f"top-k must be between 1 and {MAX_TOP_K}")
    return k


def positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("give a whole number of at least 1")
    return number


def add_runtime_option(parser: argparse.ArgumentParser) -> None:
    """`--runtime` for every command that runs a model. Checked in main(), so an unknown value gets the
    one-line error every command gives."""
    parser.add_argument(
        "--runtime",
        metavar="|".join(RUNTIMES),
        help=f"auto (default, or {RUNTIME_ENV}): ONNX Runtime on the CPU where its export is verified, else "
        "PyTorch; torch; onnx; int8 (ONNX Runtime, quantized: measured agreement and speed)",
    )


def progress_to_stderr(done: int, total: int, message: str) -> None:
    print(f"\r{message} ({done}/{total})", end="" if done < total else "\n", file=sys.stderr, flush=True)


def progress_if_watched(done: int, total: int, message: str) -> None:
    """First use of a model in ONNX Runtime exports it (seconds): say so where a person watches."""
    if sys.stderr.isatty():
        progress_to_stderr(done, total, message)


def add_weights_option(parser: argparse.ArgumentParser, what: str = "the model") -> None:
    """`--weights NAME`: one of the published weights versions of a model (`python -m core models --versions`)."""
    parser.add_argument(
        "--weights",
        metavar="NAME",
        help=f"which published ImageNet weights of {what} (resnet50: IMAGENET1K_V1 or IMAGENET1K_V2); "
        "default: torchvision's DEFAULT",
    )


def model_key(text: str, weights: str | None = None) -> ModelKey:
    """The model a person names on the command line: a catalogue name, or a model's int8 variant as the
    commands list it ("resnet50 · int8"), looked up among the keys' own labels, never split apart; in the
    weights version `weights` (None: the default; one it lacks: UnknownWeights, naming its versions)."""
    variants = {key.label: key for key in (ModelKey(name, "int8") for name in all_specs())}
    key = variants.get(text, ModelKey(text))
    return ModelKey(key.name, key.engine, weights) if weights else key


def load(key: ModelKey, args: argparse.Namespace) -> ModelHandle:
    """A catalogue model in the engine its key names, else the runtime `--runtime` asks for (else
    ZOOSCOPE_RUNTIME, else auto)."""
    return load_handle(key, pick_device(), runtime_choice=args.runtime, progress=progress_if_watched)


def read_file(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ZooScopeError(f"Could not read the {what} {path}: {error.strerror or error}.") from error


def read_inputs(paths: Sequence[str]) -> list[tuple[str, bytes] | Failure]:
    """Each path's bytes, or a Failure row for a file that cannot be read (the rest still go through)."""
    inputs: list[tuple[str, bytes] | Failure] = []
    for path in paths:
        try:
            inputs.append((path, Path(path).read_bytes()))
        except OSError as error:
            inputs.append(Failure(file=path, error=f"Could not read the file: {error.strerror or error}."))
    return inputs
