"""A catalogue model's handle, in the runtime core.runtime decides: PyTorch or ONNX Runtime.

`load_handle(key, device)` is what the app's model pool, the command line, batch and the benchmarks load
models with. It gives a core.engines.handle.ModelHandle whose torch face is the PyTorch model and whose
inference face is, on the CPU, ONNX Runtime wherever the model's export has been verified against PyTorch
(core.engines.onnx_engine), and PyTorch itself everywhere else, with a note that says why.

A key may name its engine: ModelKey("resnet50", "int8") is resnet50's int8 variant, so Compare can put
it beside ModelKey("resnet50").
"""

from __future__ import annotations

import logging

import torch

from core import runtime
from core.engines import verified
from core.engines.handle import ModelHandle
from core.engines.onnx_cache import MANIFEST
from core.engines.onnx_engine import onnx_inference
from core.engines.verified import EngineUnavailable
from core.errors import ZooScopeError
from core.models import footprints, weights
from core.models.catalog import get_spec
from core.models.keys import ModelKey
from core.models.loading import load_model
from core.progress import Progress

_log = logging.getLogger(__name__)


def load_handle(
    key: ModelKey,
    device: torch.device | str = "cpu",
    *,
    runtime_choice: str | None = None,
    progress: Progress | None = None,
) -> ModelHandle:
    """`key`'s model on `device`, in the engine the key names, else in `runtime_choice` (auto, torch, onnx
    or int8; default ZOOSCOPE_RUNTIME, else auto).

    Never fails for the runtime's sake: where ONNX Runtime cannot run the model (its export or check
    failed, now or before), the handle runs in PyTorch with a `note` saying so; int8 that cannot be
    made falls back to ONNX fp32 the same way. A key that names its engine is the exception: it asks
    for that engine only, so it raises ZooScopeError instead.
    """
    requested = key.engine or runtime_choice or runtime.requested_runtime()
    engine = runtime.resolve_runtime(requested, device)
    if key.engine and engine != key.engine:
        raise ZooScopeError(f"{key} runs in ONNX Runtime on the CPU; this server runs models on {device}.")
    loaded = load_model(key.name, device, progress=progress, weights=key.weights)
    if engine == "torch":
        if requested in ("onnx", "int8"):
            note = f"PyTorch on {loaded.device.type.upper()}: ONNX Runtime runs on the CPU only here."
            return ModelHandle.in_pytorch(loaded, note)
        return ModelHandle.in_pytorch(loaded)
    try:
        inference = onnx_inference(loaded, engine=engine, progress=progress)
    except Exception as error:  # noqa: BLE001 - whatever ONNX Runtime cannot do, PyTorch still can
        reason = str(error) if isinstance(error, EngineUnavailable) else f"{type(error).__name__}: {error}"
        if key.engine:
            raise ZooScopeError(f"{key} is not available: {reason}") from error
        _log.warning("%s stays on PyTorch: %s", key, reason, exc_info=not isinstance(error, EngineUnavailable))
        if engine == "int8":
            try:
                fp32 = onnx_inference(loaded, progress=progress)
            except Exception:  # noqa: BLE001 - fp32 failed too: the reason below says why int8 did
                pass
            else:
                return ModelHandle(loaded, fp32, note=f"ONNX Runtime fp32: int8 is not available ({reason})")
        return ModelHandle.in_pytorch(loaded, note=f"PyTorch: {reason}")
    return ModelHandle(loaded, inference, note=inference.note)


def engine_for(key: ModelKey, device: torch.device | str, runtime_choice: str | None = None) -> str:
    """The engine `key` would load in on `device`: "torch", "onnx" or "int8" (load_handle's choice)."""
    return runtime.resolve_runtime(key.engine or runtime_choice or runtime.requested_runtime(), device)


def export_pending(key: ModelKey, device: torch.device | str, runtime_choice: str | None = None) -> bool:
    """Whether loading `key` on `device` would first export it to ONNX (and quantize it, for int8): heavy
    work for the job queue. It looks for the cached manifests without hashing them (the weights are hashed,
    once per process, as the load does anyway); where the
    weights are not here yet (a download comes first), nothing cached can be matched, so True."""
    engine = engine_for(key, device, runtime_choice)
    if engine == "torch":
        return False
    spec = get_spec(key.name, key.weights)
    if not weights.is_available(spec):
        return True
    artifacts = ("fp32", "int8") if engine == "int8" else ("fp32",)
    return not all((verified.place(spec, artifact).folder / MANIFEST).exists() for artifact in artifacts)


def export_memory_mb(key: ModelKey, device: torch.device | str, runtime_choice: str | None = None) -> float:
    """What a first export of `key` (with its load) will hold (core.models.footprints)."""
    spec = get_spec(key.name, key.weights)
    engine = engine_for(key, device, runtime_choice)
    return footprints.export_mb(params=spec.num_params, input_size=spec.input_size, family=spec.family, engine=engine)
