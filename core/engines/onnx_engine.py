"""Catalogue models run by ONNX Runtime: one verified export per model and weights, one shared session.

`onnx_model(loaded)` returns the model as an `OnnxModel`, which answers to core.classify.classifier's
protocol like a `LoadedModel` does (and carries the same facts Compare shows), so nothing that
classifies asks which runtime it has. On first use the model is exported (core.engines.onnx_export), run
through ONNX Runtime on the check photos and compared with PyTorch: the same top-1 on every photo
and probabilities within 1e-4, or it is not used. The verified files go into the cache
(core.engines.onnx_cache) and every later process only checks their SHA-256 and opens a session.

The session is the model's one copy of its weights in ONNX Runtime (read from the file and laid
out for its kernels). The PyTorch module stays beside it, memory-mapped and untouched, for what
needs PyTorch (Grad-CAM, fine-tuning): its pages cost memory only once read.

`engine="int8"` adds a statically quantized variant (core.engines.quantize), calibrated on other
variations of the example photos than the check set, with its top-1 agreement with fp32 on the
check set, its speed and its size measured once and stored with it.

Everything here raises `EngineUnavailable` with a reason a person can read when ONNX Runtime cannot
run the model; core.engines.choice then keeps PyTorch and says why.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from core import runtime
from core.datasets.check_images import calibration_images, check_images
from core.engines import onnx_cache
from core.engines.onnx_export import (
    INPUT,
    ExportFailed,
    check_batches,
    compare_classifiers,
    compare_features,
    export_module,
    exporter_version,
)
from core.engines.quantize import median_ms, quantize_int8
from core.errors import ZooScopeError
from core.models import weights
from core.models.catalog import ModelSpec
from core.models.loading import LoadedModel
from core.models.views import private_view
from core.preprocessing import model_batch
from core.progress import Progress

MODEL_FILE = "model.onnx"

_log = logging.getLogger(__name__)


class EngineUnavailable(ZooScopeError):
    """ONNX Runtime cannot run this model: the export, its check or the quantization failed."""


# --- sessions -------------------------------------------------------------------------------------


def open_session(path: Path, *, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session for the model at `path`.

    All graph optimisations (constant folding, fusions, the blocked NCHWc layout for convolutions);
    intra-op threads as many as torch's (core.runtime.onnx_threads); no inter-op parallelism (one
    request's operators run in order; concurrent requests each get their own run). No memory arena:
    activations go back to the allocator after each run instead of staying reserved per model (a
    pool of five models would otherwise keep five peaks); at batch 1 that costs nothing measurable,
    and `make run`'s malloc.env keeps freed memory for reuse for all models together. ONNX Runtime's
    telemetry events are switched off.
    """
    import onnxruntime

    onnxruntime.disable_telemetry_events()  # nothing about the models a person runs leaves the machine
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or runtime.onnx_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = False
    options.log_severity_level = 3  # errors only
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class SessionForward:
    """A session as a forward function: a float batch (N, 3, S, S) in, its one output as a tensor.

    `InferenceSession.run` is thread-safe, so one of these serves every browser session at once.
    """

    def __init__(self, session: Any):
        self.session = session
        self.input = session.get_inputs()[0].name
        self.output = session.get_outputs()[0].name

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        array = batch.detach().to("cpu", torch.float32).contiguous().numpy()  # no copy for a CPU float batch
        (result,) = self.session.run([self.output], {self.input: array})
        return torch.from_numpy(result)


# --- the model ------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class OnnxModel:
    """A catalogue model run by ONNX Runtime (core.classify.classifier.Classifier), shared and read-only.

    It answers what Compare and the pages ask of a LoadedModel (spec, module, preprocess, memory,
    file size), the runtime it uses, and what was measured about it: `report` holds the check against
    PyTorch (fp32) or the int8 measurements (agreement with fp32, speed of both, fp32's size).
    """

    torch_model: LoadedModel  # memory-mapped PyTorch module: Grad-CAM, fine-tuning views, the reference
    engine: str  # "onnx" (fp32) or "int8"
    session: SessionForward = field(repr=False)
    file_bytes: int  # the ONNX file(s) on disk: the weights the session holds
    report: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def name(self) -> str:
        return runtime.variant_name(self.spec.name, self.engine)

    @property
    def spec(self) -> ModelSpec:
        return self.torch_model.spec

    @property
    def module(self) -> nn.Module:
        """The PyTorch module (not what `forward` runs): for Grad-CAM and fine-tuning views."""
        return self.torch_model.module

    @property
    def preprocess(self) -> nn.Module:
        return self.torch_model.preprocess

    @property
    def categories(self) -> list[str]:
        return self.torch_model.categories

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def runtime(self) -> str:
        return self.engine

    @property
    def precision(self) -> str:
        return "int8" if self.engine == "int8" else "fp32"

    @property
    def channels_last(self) -> bool:
        return False

    @property
    def memory_mb(self) -> float:
        """MiB of weights the session holds (its own copy; the PyTorch module's mmap is not counted)."""
        return self.file_bytes / 2**20

    @property
    def file_size_mb(self) -> float:
        return self.file_bytes / 2**20

    @property
    def agreement(self) -> float:
        """Share of the check images with PyTorch fp32's top-1 (1.0 for a verified fp32 export)."""
        return float(self.report.get("same_top1", 0)) / max(int(self.report.get("images", 0)), 1)

    def int8_verdict(self) -> tuple[bool, str]:
        """(whether this int8 variant is the fast choice, why) from its measurements; fp32: (False, "")."""
        if self.engine != "int8":
            return False, ""
        return runtime.int8_verdict(self.agreement, self.report["int8_ms"], self.report["fp32_ms"])

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits (N, C) for a preprocessed batch, computed by ONNX Runtime."""
        return self.session(batch)


# --- cached, verified artifacts ---------------------------------------------------------------


@dataclass(frozen=True)
class _Place:
    folder: Path
    describe: dict
    note: str | None  # the cache folder's own note (it could not be written)


def _place(loaded: LoadedModel, artifact: str) -> _Place:
    spec = loaded.spec
    digest = onnx_cache.weights_sha256(weights.resolve(spec))
    exporter = exporter_version()
    root = onnx_cache.cache_root()
    folder = onnx_cache.artifact_folder(root.path, spec.name, onnx_cache.cache_key(digest, exporter), artifact)
    describe = {"model": spec.name, "artifact": artifact, "weights_sha256": digest, "exporter": exporter}
    return _Place(folder, describe, root.note)


_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock(folder: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(folder, threading.Lock())


def _artifact(place: _Place, make, name: str) -> dict:
    """The artifact's verified manifest, made by `make(staging_folder) -> report` if missing or damaged;
    EngineUnavailable if it cannot be made (now, or in an earlier process)."""
    with _lock(place.folder):
        try:
            manifest = onnx_cache.read_manifest(place.folder)
        except onnx_cache.DamagedArtifact as error:
            _log.warning("%s; %s is made again", error, name)
            onnx_cache.remove(place.folder)
            manifest = None
        if manifest is None:
            try:
                manifest = onnx_cache.write(place.folder, make, describe=place.describe)
            except ExportFailed as error:
                manifest = onnx_cache.write_failure(place.folder, str(error), describe=place.describe)
    if failed := manifest.get("failed"):
        raise EngineUnavailable(f"{name} cannot run in ONNX Runtime: {failed}.")
    return manifest


def _bytes(manifest: dict) -> int:
    return sum(int(entry["bytes"]) for entry in manifest["files"].values())


def _say(progress: Progress | None, done: int, total: int, message: str) -> None:
    if progress:
        progress(done, total, message)


def _fp32(loaded: LoadedModel, progress: Progress | None, steps: int) -> tuple[_Place, dict]:
    name = loaded.spec.name
    place = _place(loaded, "fp32")

    def make(staging: Path) -> dict:
        _say(progress, 0, steps, f"Exporting {name} to ONNX (first use only; then cached)")
        export_module(private_view(loaded), loaded.spec.input_size, staging / MODEL_FILE)
        images = check_images()
        _say(progress, 1, steps, f"Checking {name}'s ONNX export against PyTorch on {len(images)} photos")
        candidate = SessionForward(open_session(staging / MODEL_FILE))
        agreement = compare_classifiers(loaded.forward, candidate, check_batches(images, loaded.preprocess))
        if not agreement.passed:
            raise ExportFailed(agreement.reason())
        return agreement.as_dict()

    return place, _artifact(place, make, name)


def _int8(
    loaded: LoadedModel, fp32_place: _Place, fp32_manifest: dict, progress: Progress | None, steps: int
) -> tuple[_Place, dict]:
    name = runtime.variant_name(loaded.spec.name, "int8")
    place = _place(loaded, "int8")
    fp32_path = fp32_place.folder / MODEL_FILE

    def make(staging: Path) -> dict:
        calibration = calibration_images()
        _say(progress, 2, steps, f"Quantizing {loaded.spec.name} to int8 (calibrating on {len(calibration)} photos)")
        preprocess = loaded.preprocess
        batches = (model_batch([image], preprocess).numpy() for image in calibration)
        try:
            quantize_int8(fp32_path, staging / MODEL_FILE, batches, input_name=INPUT)
            int8 = SessionForward(open_session(staging / MODEL_FILE))
        except Exception as error:  # an operator it cannot quantize, a graph it cannot calibrate
            raise ExportFailed(f"onnxruntime.quantization failed ({type(error).__name__}: {error})") from error
        images = check_images()
        _say(progress, 3, steps, f"Measuring {name}'s agreement with fp32 on {len(images)} photos, and its speed")
        fp32 = SessionForward(open_session(fp32_path))
        batches = check_batches(images, preprocess)
        agreement = compare_classifiers(fp32, int8, batches)
        one = batches[0]
        speed = median_ms({"fp32": lambda: fp32(one), "int8": lambda: int8(one)})
        return {
            **agreement.as_dict(),
            "int8_ms": speed["int8"],
            "fp32_ms": speed["fp32"],
            "fp32_bytes": _bytes(fp32_manifest),
            "calibration_images": len(calibration),
        }

    return place, _artifact(place, make, name)


def onnx_model(loaded: LoadedModel, *, engine: str = "onnx", progress: Progress | None = None) -> OnnxModel:
    """`loaded` (a PyTorch model on the CPU) run by ONNX Runtime: its verified fp32 export, or with
    engine="int8" its measured int8 variant. Exports, checks and quantizes on first use (with
    progress), then reads the cache. EngineUnavailable where ONNX Runtime cannot run it."""
    if engine not in ("onnx", "int8"):
        raise ValueError(f"engine must be onnx or int8, not {engine!r}")
    if loaded.device.type != "cpu":
        raise EngineUnavailable(f"{loaded.name} is on {loaded.device}: ONNX Runtime here runs on the CPU only.")
    steps = 4 if engine == "int8" else 2
    place, manifest = _fp32(loaded, progress, steps)
    if engine == "int8":
        place, manifest = _int8(loaded, place, manifest, progress, steps)
    session = SessionForward(open_session(place.folder / MODEL_FILE))
    _say(progress, steps, steps, f"{runtime.variant_name(loaded.spec.name, engine)} is ready in ONNX Runtime")
    return OnnxModel(
        torch_model=loaded,
        engine=engine,
        session=session,
        file_bytes=_bytes(manifest),
        report=manifest["report"],
        note=place.note or "",
    )


def onnx_features(
    loaded: LoadedModel, module: nn.Module, *, progress: Progress | None = None
) -> tuple[SessionForward, dict]:
    """`module` (the backbone of `loaded` with its head taken off: images -> features) run by ONNX
    Runtime, verified: its features within 1e-4 of PyTorch's on the check photos. Cached like the
    classifiers; (forward, report), or EngineUnavailable."""
    name = loaded.spec.name
    place = _place(loaded, "features")

    def make(staging: Path) -> dict:
        _say(progress, 0, 2, f"Exporting {name}'s feature extractor to ONNX (first use only; then cached)")
        export_module(module, loaded.spec.input_size, staging / MODEL_FILE, output="features")
        images = check_images()
        _say(progress, 1, 2, f"Checking {name}'s ONNX features against PyTorch on {len(images)} photos")
        candidate = SessionForward(open_session(staging / MODEL_FILE))

        def reference(batch: torch.Tensor) -> torch.Tensor:
            return module(batch)

        agreement = compare_features(reference, candidate, check_batches(images, loaded.preprocess))
        if not agreement.passed:
            raise ExportFailed(agreement.reason("features"))
        return agreement.as_dict()

    manifest = _artifact(place, make, f"{name}'s feature extractor")
    return SessionForward(open_session(place.folder / MODEL_FILE)), manifest["report"]
