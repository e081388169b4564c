"""ONNX Runtime as a catalogue model's inference engine: one verified export per model and weights, one shared session.

`onnx_inference(loaded)` gives an `OnnxEngine`: the inference face of the model's handle
(core.engines.handle.ModelHandle), whose torch face stays the PyTorch model. On first use the model is
exported, run through ONNX Runtime on the check photos and compared with PyTorch
(core.engines.verified): the same top-1 on every photo and probabilities within 1e-4, or it is not used.
The verified files go into the cache (core.engines.onnx_cache) and every later process only checks
their SHA-256 and opens a session.

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

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from core.datasets.check_images import calibration_images, check_images
from core.engines import verified
from core.engines.onnx_export import ExportFailed, check_batches
from core.engines.sessions import SessionForward, session_forward
from core.engines.verified import EngineUnavailable, Place
from core.models.keys import model_label
from core.models.loading import LoadedModel
from core.models.views import private_view
from core.progress import Progress

MODEL_FILE = "model.onnx"


@dataclass(frozen=True, eq=False)
class OnnxEngine:
    """ONNX Runtime running a catalogue model's verified export on the CPU, shared and read-only.

    `report` holds what was measured: the check against PyTorch (fp32), or the int8 measurements
    (agreement with fp32, speed of both, fp32's size).
    """

    runtime: str  # "onnx" (fp32) or "int8"
    session: SessionForward = field(repr=False)
    file_bytes: int  # the ONNX file(s) on disk: the weights the session holds
    report: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""  # where its files live when the cache folder could not be written

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def precision(self) -> str:
        return "int8" if self.runtime == "int8" else "fp32"

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

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits (N, C) for a preprocessed batch, computed by ONNX Runtime."""
        return self.session(batch)


# --- the cached, verified artifacts ---------------------------------------------------------------


def _say(progress: Progress | None, done: int, total: int, message: str) -> None:
    if progress:
        progress(done, total, message)


def _fp32(loaded: LoadedModel, progress: Progress | None, steps: int) -> tuple[Place, dict]:
    name = loaded.spec.label
    where = verified.place(loaded.spec, "fp32")

    def make(staging: Path) -> dict:
        _say(progress, 0, steps, f"Exporting {name} to ONNX (first use only; then cached)")
        images = check_images()
        checked = verified.export_checked(
            private_view(loaded),
            loaded.spec.input_size,
            staging / MODEL_FILE,
            reference=loaded.forward,
            batches=check_batches(images, loaded.preprocess),
            exported=lambda: _say(
                progress, 1, steps, f"Checking {name}'s ONNX export against PyTorch on {len(images)} photos"
            ),
        )
        if not checked.agreement.passed:
            raise ExportFailed(checked.agreement.reason())
        return checked.agreement.as_dict()

    return where, verified.cached(where, make, name)


def _int8(
    loaded: LoadedModel, fp32_place: Place, fp32_manifest: dict, progress: Progress | None, steps: int
) -> tuple[Place, dict]:
    name = model_label(loaded.spec.name, "int8", loaded.spec.weights_choice)
    where = verified.place(loaded.spec, "int8")
    fp32_path = fp32_place.folder / MODEL_FILE

    def make(staging: Path) -> dict:
        calibration = calibration_images()
        _say(progress, 2, steps, f"Quantizing {loaded.spec.label} to int8 (calibrating on {len(calibration)} photos)")
        int8 = verified.quantized(fp32_path, staging / MODEL_FILE, calibration, loaded.preprocess)
        images = check_images()
        _say(progress, 3, steps, f"Measuring {name}'s agreement with fp32 on {len(images)} photos, and its speed")
        measured = verified.measure_int8(session_forward(fp32_path), int8, check_batches(images, loaded.preprocess))
        return {
            **measured.agreement.as_dict(),
            "int8_ms": measured.int8_ms,
            "fp32_ms": measured.fp32_ms,
            "fp32_bytes": verified.manifest_bytes(fp32_manifest),
            "calibration_images": len(calibration),
        }

    return where, verified.cached(where, make, name)


def onnx_inference(loaded: LoadedModel, *, engine: str = "onnx", progress: Progress | None = None) -> OnnxEngine:
    """`loaded` (a PyTorch model on the CPU) run by ONNX Runtime: its verified fp32 export, or with
    engine="int8" its measured int8 variant. Exports, checks and quantizes on first use (with
    progress), then reads the cache. EngineUnavailable where ONNX Runtime cannot run it."""
    if engine not in ("onnx", "int8"):
        raise ValueError(f"engine must be onnx or int8, not {engine!r}")
    if loaded.device.type != "cpu":
        raise EngineUnavailable(f"{loaded.name} is on {loaded.device}: ONNX Runtime here runs on the CPU only.")
    steps = 4 if engine == "int8" else 2
    where, manifest = _fp32(loaded, progress, steps)
    if engine == "int8":
        where, manifest = _int8(loaded, where, manifest, progress, steps)
    session = session_forward(where.folder / MODEL_FILE)
    ready = model_label(loaded.spec.name, engine, loaded.spec.weights_choice)
    _say(progress, steps, steps, f"{ready} is ready in ONNX Runtime")
    return OnnxEngine(
        runtime=engine,
        session=session,
        file_bytes=verified.manifest_bytes(manifest),
        report=manifest["report"],
        note=where.note or "",
    )


def onnx_features(
    loaded: LoadedModel, module: nn.Module, *, progress: Progress | None = None
) -> tuple[SessionForward, dict]:
    """`module` (the backbone of `loaded` with its head taken off: images -> features) run by ONNX
    Runtime, verified: its features within 1e-4 of PyTorch's on the check photos. Cached like the
    classifiers; (forward, report), or EngineUnavailable."""
    name = loaded.spec.label
    where = verified.place(loaded.spec, "features")

    def make(staging: Path) -> dict:
        _say(progress, 0, 2, f"Exporting {name}'s feature extractor to ONNX (first use only; then cached)")
        images = check_images()

        def reference(batch: torch.Tensor) -> torch.Tensor:
            return module(batch)

        checked = verified.export_checked(
            module,
            loaded.spec.input_size,
            staging / MODEL_FILE,
            reference=reference,
            batches=check_batches(images, loaded.preprocess),
            output="features",
            exported=lambda: _say(
                progress, 1, 2, f"Checking {name}'s ONNX features against PyTorch on {len(images)} photos"
            ),
        )
        if not checked.agreement.passed:
            raise ExportFailed(checked.agreement.reason("features"))
        return checked.agreement.as_dict()

    manifest = verified.cached(where, make, f"{name}'s feature extractor")
    return session_forward(where.folder / MODEL_FILE), manifest["report"]
