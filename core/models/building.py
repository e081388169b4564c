"""An architecture with weights assigned, never copied: the one place models are built on the meta device.

Building on the meta device skips the random initialisation a standard build pays for (seconds
for VGG); `load_state_dict(assign=True)` then puts the real tensors in place.
"""

from __future__ import annotations

import itertools
import zipfile
from pathlib import Path

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from core import runtime
from core.errors import WeightsUnavailable
from core.models.catalog import ModelSpec

# Tensors up to this many elements stay real while a builder that computes runs (regnet's block
# widths are a few dozen numbers); everything larger, the parameters, goes to the meta device.
SMALL_TENSOR = 4096


class _LargeTensorsOnMeta(TorchFunctionMode):
    """Every tensor an operation makes stays real while small and goes to the meta device once
    large: a builder can compute with its small tensors (`.tolist()`), while its parameters take no
    memory and their initialisation no time. Thread-local, like torch.device("meta")."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        if isinstance(result, torch.Tensor) and not result.is_meta and result.numel() > SMALL_TENSOR:
            return result.to("meta")
        return result


def build_on_meta(spec: ModelSpec) -> nn.Module:
    """`spec`'s architecture with parameters on the meta device (no memory, no init).

    A few builders (regnet) compute with tensors while constructing: for those, only the large
    tensors (every big parameter) go to the meta device; small ones are real, with their random
    init. Either way, load_state_dict(assign=True) replaces them all. Under runtime.TORCH_GLOBAL_STATE:
    a builder's init runs through functions that edit torch's process-wide tracing state while
    another session exports.
    """
    with runtime.TORCH_GLOBAL_STATE:
        return _build_on_meta(spec)


def _build_on_meta(spec: ModelSpec) -> nn.Module:
    try:
        with torch.device("meta"):
            return spec.build()
    except NotImplementedError:
        pass
    try:
        with _LargeTensorsOnMeta():
            return spec.build()
    except NotImplementedError:  # it read a large tensor's values: build it for real
        return spec.build()


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors only (weights_only: nothing in the file can run code), mmap'd where the format allows."""
    # mmap needs torch's zip format; a few older checkpoints are in the legacy format.
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as error:  # pickle errors, truncation, zip damage: all mean "bad file"
        raise WeightsUnavailable(
            f"The weights file {path} could not be read ({error}); delete it and try again."
        ) from error


def meta_tensors(model: nn.Module) -> list[str]:
    """Names of the parameters and buffers still on the meta device (never given real values)."""
    named = itertools.chain(model.named_parameters(), model.named_buffers())
    return [name for name, tensor in named if tensor.is_meta]


def build_model(spec: ModelSpec, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """The architecture with the given weights assigned (not copied), in eval mode, frozen."""
    model = build_on_meta(spec)
    model.load_state_dict(spec.adapt_state_dict(state_dict, model), strict=True, assign=True)
    if missing := meta_tensors(model):
        # Buffers computed in __init__ and absent from the file: rebuild them for real.
        with runtime.TORCH_GLOBAL_STATE:
            model_for_real = spec.build()
        model_for_real.load_state_dict(spec.adapt_state_dict(state_dict, model_for_real), strict=True)
        model = model_for_real
        assert not meta_tensors(model), missing
    return model.eval().requires_grad_(False)
