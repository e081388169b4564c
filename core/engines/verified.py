"""One verified-export pipeline: export -> verify against PyTorch on images -> (optionally) quantize ->
measure agreement, speed and size -> cache.

Its users put the same steps together:

- a catalogue model (core.engines.onnx_engine): its fp32 export, its int8 variant and its feature
  extractor, each an artifact made once per weights and exporter and kept in the verified cache
  (core.engines.onnx_cache), a failure remembered with its reason;
- a person's trained model (core.finetune.deploy): fp32 and int8 files made in a temporary folder for
  download, checked on the person's own validation images.

What a failed check means is the caller's: the catalogue refuses such an export (ExportFailed, remembered),
a download reports its agreement as measured.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn
from PIL import Image

from core.engines import onnx_cache
from core.engines.onnx_export import (
    INPUT,
    Agreement,
    ExportFailed,
    Forward,
    compare_classifiers,
    compare_features,
    export_module,
    exporter_version,
)
from core.engines.quantize import median_ms, quantize_int8
from core.engines.sessions import SessionForward, session_forward
from core.errors import ZooScopeError
from core.models import weights
from core.models.catalog import ModelSpec
from core.preprocessing import Transform, model_batch

_log = logging.getLogger(__name__)


class EngineUnavailable(ZooScopeError):
    """ONNX Runtime cannot run this model: the export, its check or the quantization failed."""


# --- export, verify -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checked:
    """An export opened in ONNX Runtime and compared with its PyTorch reference."""

    path: Path
    forward: SessionForward
    agreement: Agreement


def export_checked(
    module: nn.Module,
    input_size: int,
    path: Path,
    *,
    reference: Forward,
    batches: Sequence,
    output: str = "logits",
    exported: Callable[[], None] | None = None,
) -> Checked:
    """`module` exported to `path`, opened in ONNX Runtime and compared with `reference` on `batches`:
    a classifier by its top-1 and probabilities, a feature extractor (`output="features"`) element by element.
    `exported()` is called between the export and the check (a progress step)."""
    export_module(module, input_size, path, output=output)
    if exported:
        exported()
    forward = session_forward(path)
    compare = compare_features if output == "features" else compare_classifiers
    return Checked(path, forward, compare(reference, forward, batches))


# --- quantize, measure ----------------------------------------------------------------------------


def quantized(fp32_path: Path, path: Path, calibration: Sequence[Image.Image], preprocess: Transform) -> SessionForward:
    """The int8 version of the export at `fp32_path`, written to `path` and opened, its activation ranges
    measured on `calibration` (one image a batch); ExportFailed where onnxruntime.quantization cannot."""
    batches = (model_batch([image], preprocess).numpy() for image in calibration)
    try:
        quantize_int8(fp32_path, path, batches, input_name=INPUT)
        return session_forward(path)
    except Exception as error:  # an operator it cannot quantize, a graph it cannot calibrate
        raise ExportFailed(f"onnxruntime.quantization failed ({type(error).__name__}: {error})") from error


@dataclass(frozen=True)
class Int8Measures:
    agreement: Agreement  # int8 against fp32 on the check batches
    int8_ms: float  # batch 1, median, here
    fp32_ms: float


def measure_int8(fp32: Forward, int8: Forward, batches: Sequence) -> Int8Measures:
    """int8's top-1 and probabilities against fp32's on `batches`, and both timed on the first (batch 1)."""
    agreement = compare_classifiers(fp32, int8, batches)
    one = batches[0]
    speed = median_ms({"fp32": lambda: fp32(one), "int8": lambda: int8(one)})
    return Int8Measures(agreement, int8_ms=speed["int8"], fp32_ms=speed["fp32"])


# --- cache ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Place:
    """Where one artifact of one model lives in the cache, and what it is made from."""

    folder: Path
    describe: dict
    note: str | None  # the cache folder's own note (it could not be written)


def place(spec: ModelSpec, artifact: str) -> Place:
    """The cache folder of `spec`'s `artifact` ("fp32", "int8", "features"), keyed by its weights and the exporter."""
    digest = onnx_cache.weights_sha256(weights.resolve(spec))
    exporter = exporter_version()
    root = onnx_cache.cache_root()
    # The folder names the weights version too (its digest alone already keeps two versions apart).
    folder = onnx_cache.artifact_folder(root.path, spec.slug, onnx_cache.cache_key(digest, exporter), artifact)
    describe = {"model": spec.name, "artifact": artifact, "weights_sha256": digest, "exporter": exporter}
    return Place(folder, describe, root.note)


_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock(folder: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(folder, threading.Lock())


def cached(where: Place, make: Callable[[Path], dict], name: str) -> dict:
    """The artifact's verified manifest, made by `make(staging_folder) -> report` if missing or damaged;
    EngineUnavailable if it cannot be made (now, or in an earlier process: ExportFailed is remembered)."""
    with _lock(where.folder):
        try:
            manifest = onnx_cache.read_manifest(where.folder)
        except onnx_cache.DamagedArtifact as error:
            _log.warning("%s; %s is made again", error, name)
            onnx_cache.remove(where.folder)
            manifest = None
        if manifest is None:
            try:
                manifest = onnx_cache.write(where.folder, make, describe=where.describe)
            except ExportFailed as error:
                manifest = onnx_cache.write_failure(where.folder, str(error), describe=where.describe)
    if failed := manifest.get("failed"):
        raise EngineUnavailable(f"{name} cannot run in ONNX Runtime: {failed}.")
    return manifest


def manifest_bytes(manifest: dict) -> int:
    """The artifact's size: its files' bytes together (the weights its session holds)."""
    return sum(int(entry["bytes"]) for entry in manifest["files"].values())
