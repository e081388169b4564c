"""`load_model(name, device)`: build on the meta device, mmap the weights, assign them, eval().

Building on the meta device skips the random initialisation a standard build pays for (seconds
for VGG), and `load_state_dict(assign=True)` from an mmap'd file keeps the tensors in the page
cache instead of copying them: a cold load costs little more than reading the file.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

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
    # Why it runs in PyTorch where another runtime was asked for (core.engines.choice), for the sidebar.
    note: str = ""

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def runtime(self) -> str:
        """Which engine runs `forward`: PyTorch (core.engines.onnx_engine.OnnxModel says "onnx" or "int8")."""
        return "torch"

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
) -> LoadedModel:
    """Find (or download) the verified weights for `name` and return a ready model on `device`.

    On CUDA, a CNN's weights are moved once into channels-last layout (core.runtime decides by
    family). `precision` ("fp32", "bf16" or "auto"; default: ZOOSCOPE_PRECISION, else auto) is
    resolved once here by core.runtime.model_precision; on the CPU, auto means fp32.
    """
    spec = get_spec(name)
    path = weights.resolve(spec, progress=progress)
    if progress:
        progress(0, 1, f"Loading {spec.name}")
    device = torch.device(device)
    module = build_model(spec, read_state_dict(path))
    channels_last = runtime.use_channels_last(spec.traits, device)
    if device.type != "cpu":
        module = module.to(device, memory_format=torch.channels_last) if channels_last else module.to(device)
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


# What the pool may hold, in MiB of parameters + buffers. Streamlit Community Cloud gives an app
# about 2.7 GB in all; torch, torchvision and streamlit themselves take several hundred MB, and
# a forward pass needs its activations on top: 1500 MB of models leaves room for those.
DEFAULT_MEMORY_BUDGET_MB = 1500.0
MEMORY_BUDGET_ENV = "ZOOSCOPE_MEMORY_BUDGET_MB"

_log = logging.getLogger(__name__)


def memory_budget_from_env() -> float:
    """ZOOSCOPE_MEMORY_BUDGET_MB as a positive number of MiB, else the default."""
    raw = os.environ.get(MEMORY_BUDGET_ENV, "").strip()
    if not raw:
        return DEFAULT_MEMORY_BUDGET_MB
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0:  # zero, negatives and nan; inf means no limit
        _log.warning("%s=%r is not a positive number of MB; using %g", MEMORY_BUDGET_ENV, raw, DEFAULT_MEMORY_BUDGET_MB)
        return DEFAULT_MEMORY_BUDGET_MB
    return value


def file_size_estimate_mb(name: str) -> float:
    """What a model will occupy once loaded, guessed before loading: its weights file's size (a
    quarter of it for an int8 variant, "resnet50 · int8")."""
    base, engine = runtime.split_variant(name)
    size = get_spec(base).file_size_mb
    return size / 4 if engine == "int8" else size


class ModelPool:
    """The process-wide set of loaded models, shared by every browser session.

    It holds whatever its loader makes: `load_model`'s LoadedModel by default; the app's pool
    (ui.model_pool) loads through core.engines.choice, so an entry may be an ONNX Runtime model, and its
    size (`memory_mb`) is then what the session holds.

    One lock per model name makes concurrent first requests load a model once. Models are kept
    in least-recently-used order under a memory budget: before a new model loads, the least
    recently used ones are unloaded until the ones kept plus the newcomer's estimated size
    (`estimate_mb(name)`, by default its weights file's size) fit in `budget_mb`.
    """

    def __init__(
        self,
        device: torch.device | str = "cpu",
        loader: Callable[..., LoadedModel] = load_model,
        budget_mb: float | None = None,
        *,
        estimate_mb: Callable[[str], float] = file_size_estimate_mb,
    ):
        self.device = torch.device(device)
        self.budget_mb = float(budget_mb) if budget_mb is not None else memory_budget_from_env()
        self._loader = loader
        self._estimate_mb = estimate_mb
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()  # least recently used first
        self._sizes: dict[str, float] = {}  # MiB of each loaded model, measured once when it arrives
        self._reserved: dict[str, float] = {}  # estimates of models loading right now
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def get(
        self,
        name: str,
        *,
        progress: Progress | None = None,
        on_evict: Callable[[str], None] | None = None,
    ) -> LoadedModel:
        """The loaded model `name`, loading it (and unloading others to fit) if needed.

        `on_evict(evicted_name)` is called for each model unloaded to make room, so a page can say
        "unloaded vgg16 to stay under the memory budget".
        """
        with self._lock:
            if name in self._models:
                self._models.move_to_end(name)  # most recently used last
                return self._models[name]
            name_lock = self._loading.setdefault(name, threading.Lock())
        with name_lock:
            with self._lock:
                if name in self._models:
                    self._models.move_to_end(name)
                    return self._models[name]
            estimate = float(self._estimate_mb(name))
            with self._lock:
                evicted = self._evict_for(estimate)
                if self._used_locked() + estimate > self.budget_mb:
                    # Larger than the budget on its own (or beside loads in flight): load it anyway.
                    _log.warning(
                        "%s (about %.0f MB) does not fit the %.0f MB memory budget beside %.0f MB; loading it anyway",
                        name,
                        estimate,
                        self.budget_mb,
                        self._used_locked(),
                    )
                self._reserved[name] = estimate
            try:
                self._after_evicting(evicted, on_evict)
                model = self._loader(name, self.device, progress=progress)
            finally:
                with self._lock:
                    self._reserved.pop(name, None)
            size = float(model.memory_mb)
            with self._lock:
                self._models[name] = model
                self._sizes[name] = size
                # The estimate can be low: trim again with the real size, never the newcomer.
                evicted = self._evict_for(0.0, keep=name)
            self._after_evicting(evicted, on_evict)
            return model

    def _evict_for(self, needed_mb: float, keep: str | None = None) -> list[str]:
        """Under self._lock: unload least recently used models until `needed_mb` more fits."""
        evicted = []
        while self._models and self._used_locked() + needed_mb > self.budget_mb:
            victim = next((n for n in self._models if n != keep), None)
            if victim is None:
                break
            del self._models[victim]
            self._sizes.pop(victim, None)
            evicted.append(victim)
        return evicted

    def _after_evicting(self, evicted: list[str], on_evict: Callable[[str], None] | None) -> None:
        if not evicted:
            return
        _log.info("unloaded %s to stay under the %.0f MB memory budget", ", ".join(evicted), self.budget_mb)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if on_evict:
            for name in evicted:
                on_evict(name)

    def _used_locked(self) -> float:
        return sum(self._sizes.values()) + sum(self._reserved.values())

    def used_mb(self) -> float:
        """MiB held by the loaded models (parameters + buffers)."""
        with self._lock:
            return sum(self._sizes.values())

    def loaded(self) -> list[str]:
        """Loaded model names, least recently used first."""
        with self._lock:
            return list(self._models)

    def models(self) -> list[LoadedModel]:
        """The loaded models themselves (whatever the loader made of them), least recently used first;
        reading them does not count as using them."""
        with self._lock:
            return list(self._models.values())

    def unload(self, name: str | None = None) -> None:
        """Forget one model (or all); memory returns once no request still holds it."""
        with self._lock:
            if name is None:
                self._models.clear()
                self._sizes.clear()
            else:
                self._models.pop(name, None)
                self._sizes.pop(name, None)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
