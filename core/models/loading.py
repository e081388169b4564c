"""`load_model(name, device)`: build on the meta device, mmap the weights, assign them, eval().

A `LoadedModel` is the PyTorch model itself, the torch face of a catalogue model's handle
(core.engines.handle.ModelHandle); the shared pool of handles is core.engines.pool.

Building on the meta device skips the random initialisation a standard build pays for (seconds
for VGG), and `load_state_dict(assign=True)` from an mmap'd file keeps the tensors in the page
cache instead of copying them: a cold load costs little more than reading the file.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from core import runtime
from core.models import weights
from core.models.building import build_model, read_state_dict
from core.models.catalog import ModelSpec, get_spec
from core.models.precision_check import bf16_check
from core.progress import Progress


@dataclass(frozen=True)
class LoadedModel:
    """A ready, shared, read-only model: never train, mutate or move it."""

    spec: ModelSpec
    module: nn.Module
    preprocess: nn.Module
    device: torch.device
    # How core.classify.predict runs it, decided once at load (core.runtime): "fp32", or "bf16" autocast;
    # whether its weights (so its inputs too) are in channels-last layout (CNNs on CUDA).
    precision: str = "fp32"
    channels_last: bool = False

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def file_size_mb(self) -> float:
        return self.spec.file_size_mb

    @property
    def categories(self) -> list[str]:
        return self.spec.categories

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits for a preprocessed batch, on the model's device, in its precision; the module is only read.

        The batch is moved once (pinned, and channels-last where the model is, on CUDA).
        """
        with torch.inference_mode():
            x = _to_device(batch, self.device, channels_last=self.channels_last)
            with runtime.autocast(self.device, self.precision):
                return self.module(x)

    @functools.cached_property  # counted once (~3 ms for a model of 300 tensors); the model never changes
    def memory_mb(self) -> float:
        """MiB of its parameters and buffers: what it occupies once its weights are touched."""
        tensors = itertools.chain(self.module.parameters(), self.module.buffers())
        return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def load_model(
    name: str,
    device: torch.device | str = "cpu",
    *,
    progress: Progress | None = None,
    precision: str | None = None,
    weights: str | None = None,
) -> LoadedModel:
    """Find (or download) the verified weights for `name` and return a ready model on `device`.

    `weights` names a published version ("IMAGENET1K_V1"; None: the default): its file, transforms and input size.

    On CUDA, a CNN's weights are moved once into channels-last layout (core.runtime decides by
    family). `precision` ("fp32", "bf16" or "auto"; default: ZOOSCOPE_PRECISION, else auto) is
    resolved once here by core.runtime.model_precision; on the CPU, auto means fp32.
    """
    spec = get_spec(name, weights)
    path = _weights_file(spec, progress)
    if progress:
        progress(0, 1, f"Loading {spec.name}")
    device = torch.device(device)
    module = build_model(spec, read_state_dict(path))
    channels_last = runtime.use_channels_last(spec.traits, device)
    if device.type != "cpu":
        if channels_last:  # torch's stubs lack to(device, memory_format=...), which Module.to accepts
            module = module.to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]
        else:
            module = module.to(device)
    resolved = runtime.model_precision(spec.traits, device, precision, agreement=lambda: bf16_check(device))
    if device.type != "cpu":
        warm_up(module, spec.input_size, device, precision=resolved, channels_last=channels_last)
    return LoadedModel(
        spec=spec,
        module=module,
        preprocess=spec.transforms(),
        device=device,
        precision=resolved,
        channels_last=channels_last,
    )


def _weights_file(spec: ModelSpec, progress: Progress | None) -> Path:
    # Out here: inside load_model its `weights` argument (a version's name) hides the module.
    return weights.resolve(spec, progress=progress)


def _to_device(batch: torch.Tensor, device: torch.device, *, channels_last: bool = False) -> torch.Tensor:
    """`batch` on `device`, moved once; from pinned memory and channels-last where that pays (CUDA)."""
    if device.type != "cuda":
        return batch.to(device, non_blocking=True)
    if batch.device.type == "cpu" and not batch.is_pinned():
        batch = batch.pin_memory()
    x = batch.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def warm_up(
    module: nn.Module,
    input_size: int,
    device: torch.device,
    *,
    precision: str = "fp32",
    channels_last: bool = False,
) -> None:
    """One forward at load time, in the layout and precision requests will use, so the first
    person's latency is not CUDA's lazy set-up (cuDNN picks its kernels per layout and dtype).

    Not on the CPU: there it costs as much as a real forward (0.7 s for VGG16, more than the
    whole fast load) and makes the next one barely faster (bench/bench_load.py).
    """
    x = torch.zeros(1, 3, input_size, input_size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), runtime.autocast(device, precision):
        module(x)
