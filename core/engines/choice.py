"""A catalogue model ready to classify, in the runtime core.runtime decides: PyTorch or ONNX Runtime.

`load_classifier(name, device)` is what the app's model pool, the command line and the benchmarks
load models with. On the CPU it gives the model run by ONNX Runtime (core.engines.onnx_engine.OnnxModel)
wherever its export has been verified against PyTorch, and the PyTorch model (core.models.loading.LoadedModel)
everywhere else, with a note that says why. Both answer to core.classify.classifier's protocol.

A name may carry its runtime: "resnet50 · int8" is resnet50's int8 variant, so Compare can put it
beside "resnet50".
"""

from __future__ import annotations

import dataclasses
import logging

import torch

from core import runtime
from core.engines.onnx_engine import EngineUnavailable, OnnxModel, onnx_model
from core.errors import ZooScopeError
from core.models.loading import LoadedModel, load_model
from core.progress import Progress

Model = LoadedModel | OnnxModel

_log = logging.getLogger(__name__)


def load_classifier(
    name: str,
    device: torch.device | str = "cpu",
    *,
    runtime_choice: str | None = None,
    progress: Progress | None = None,
) -> Model:
    """The model `name` on `device`, in `runtime_choice` (auto, torch, onnx or int8; default
    ZOOSCOPE_RUNTIME, else auto), or in the runtime its name carries ("resnet50 · int8").

    Never fails for the runtime's sake: where ONNX Runtime cannot run the model (its export or check
    failed, now or before), the PyTorch model comes back with a `note` saying so; int8 that cannot be
    made falls back to ONNX fp32 the same way. A name that carries its runtime is the exception: it
    asks for that variant only, so it raises ZooScopeError instead.
    """
    base, variant = runtime.split_variant(name)
    requested = variant or runtime_choice or runtime.requested_runtime()
    engine = runtime.resolve_runtime(requested, device)
    if variant and engine != variant:
        raise ZooScopeError(f"{name} runs in ONNX Runtime on the CPU; this server runs models on {device}.")
    loaded = load_model(base, device, progress=progress)
    if engine == "torch":
        if requested in ("onnx", "int8"):
            note = f"PyTorch on {loaded.device.type.upper()}: ONNX Runtime runs on the CPU only here."
            return dataclasses.replace(loaded, note=note)
        return loaded
    try:
        return onnx_model(loaded, engine=engine, progress=progress)
    except Exception as error:  # noqa: BLE001 - whatever ONNX Runtime cannot do, PyTorch still can
        reason = str(error) if isinstance(error, EngineUnavailable) else f"{type(error).__name__}: {error}"
        if variant:
            raise ZooScopeError(f"{name} is not available: {reason}") from error
        _log.warning("%s stays on PyTorch: %s", base, reason, exc_info=not isinstance(error, EngineUnavailable))
        if engine == "int8":
            try:
                fp32 = onnx_model(loaded, progress=progress)
            except Exception:  # noqa: BLE001 - fp32 failed too: the reason below says why int8 did
                pass
            else:
                return dataclasses.replace(fp32, note=f"ONNX Runtime fp32: int8 is not available ({reason})")
        return dataclasses.replace(loaded, note=f"PyTorch: {reason}")
