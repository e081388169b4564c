"""`load_model(name, device)`: build on the meta device, mmap the weights, assign them, eval().

Building on the meta device skips the random initialisation a standard build pays for (seconds
for VGG), and `load_state_dict(assign=True)` from an mmap'd file keeps the tensors in the page
cache instead of copying them: a cold load costs little more than reading the file.
"""

from __future__ import annotations

import itertools
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from core import weights
from core.catalog import ModelSpec, get_spec
from core.errors import WeightsUnavailable

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class LoadedModel:
    """A ready, shared, read-only model: never train, mutate or move it."""

    spec: ModelSpec
    module: nn.Module
    preprocess: nn.Module
    device: torch.device

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def categories(self) -> list[str]:
        return self.spec.categories


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors only (weights_only: nothing in the file can run code), mmap'd where the format allows."""
    # mmap needs torch's zip format; a few older checkpoints are in the legacy format.
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as error:  # pickle errors, truncation, zip damage: all mean "bad file"
        raise WeightsUnavailable(
            f"The weights file {path} could not be read ({error}); delete it and try again."
        ) from error


def _meta_tensors(model: nn.Module) -> list[str]:
    named = itertools.chain(model.named_parameters(), model.named_buffers())
    return [name for name, tensor in named if tensor.is_meta]


def build_model(spec: ModelSpec, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """The architecture with the given weights assigned (not copied), in eval mode."""
    try:
        with torch.device("meta"):
            model = spec.build()
    except NotImplementedError:
        # A few builders (regnet) compute with tensors while constructing: build for real.
        model = spec.build()
    model.load_state_dict(spec.adapt_state_dict(state_dict, model), strict=True, assign=True)
    if missing := _meta_tensors(model):
        # Buffers computed in __init__ and absent from the file: rebuild them for real.
        model_for_real = spec.build()
        model_for_real.load_state_dict(spec.adapt_state_dict(state_dict, model_for_real), strict=True)
        model = model_for_real
        assert not _meta_tensors(model), missing
    return model.eval().requires_grad_(False)


def load_model(name: str, device: torch.device | str = "cpu", *, progress: Progress | None = None) -> LoadedModel:
    """Find (or download) the verified weights for `name` and return a ready model on `device`."""
    spec = get_spec(name)
    path = weights.resolve(spec, progress=progress)
    if progress:
        progress(0, 1, f"Loading {spec.name}")
    device = torch.device(device)
    module = build_model(spec, read_state_dict(path))
    if device.type != "cpu":
        module = module.to(device)
        warm_up(module, spec.input_size, device)
    return LoadedModel(spec=spec, module=module, preprocess=spec.transforms(), device=device)


def warm_up(module: nn.Module, input_size: int, device: torch.device) -> None:
    """One forward at load time, so the first person's latency is not CUDA's lazy set-up.

    Not on the CPU: there it costs as much as a real forward (0.7 s for VGG16, more than the
    whole fast load) and makes the next one barely faster (bench/bench_load.py).
    """
    with torch.inference_mode():
        module(torch.zeros(1, 3, input_size, input_size, device=device))


class ModelPool:
    """The process-wide set of loaded models, shared by every browser session.

    One lock per model name makes concurrent first requests load a model once.
    """

    def __init__(self, device: torch.device | str = "cpu", loader: Callable[..., LoadedModel] = load_model):
        self.device = torch.device(device)
        self._loader = loader
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def get(self, name: str, *, progress: Progress | None = None) -> LoadedModel:
        with self._lock:
            if name in self._models:
                self._models.move_to_end(name)  # most recently used last
                return self._models[name]
            name_lock = self._loading.setdefault(name, threading.Lock())
        with name_lock:
            with self._lock:
                if name in self._models:
                    return self._models[name]
            model = self._loader(name, self.device, progress=progress)
            with self._lock:
                self._models[name] = model
            return model

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._models)

    def unload(self, name: str | None = None) -> None:
        """Forget one model (or all); memory returns once no request still holds it."""
        with self._lock:
            if name is None:
                self._models.clear()
            else:
                self._models.pop(name, None)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
