"""The process-wide pool of loaded models, shared by every browser session, under a memory budget.

Keyed by `ModelKey` (core.models.keys: a model's name and the engine asked for), never by a display
string. The budget and the size guessed before a load are core.runtime's decisions.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import torch

from core import runtime
from core.models.catalog import get_spec
from core.models.keys import ModelKey
from core.progress import Progress

_log = logging.getLogger(__name__)


def file_size_estimate_mb(key: ModelKey) -> float:
    """What `key`'s model will occupy once loaded, guessed before loading (core.runtime.memory_estimate_mb)."""
    return runtime.memory_estimate_mb(get_spec(key.name, key.weights).file_size_mb, key.engine)


def _load_handle(key: ModelKey, device: torch.device, *, progress: Progress | None = None) -> Any:
    # Imported here: the engines sit above the models' wing (they load through core.models.loading).
    from core.engines.choice import load_handle

    return load_handle(key, device, progress=progress)


class ModelPool:
    """The process-wide set of loaded models, shared by every browser session.

    It holds whatever its loader makes of a key: by default core.engines.choice.load_handle's ModelHandle
    (the runtime core.runtime decides, or the key's own engine), whose `memory_mb` is what its engine holds.

    One lock per key makes concurrent first requests load a model once. Models are kept in
    least-recently-used order under a memory budget: before a new model loads, the least recently
    used ones are unloaded until the ones kept plus the newcomer's estimated size (`estimate_mb(key)`,
    by default its weights file's size) fit in `budget_mb` (default: core.runtime.memory_budget_mb()).
    """

    def __init__(
        self,
        device: torch.device | str = "cpu",
        loader: Callable[..., Any] = _load_handle,
        budget_mb: float | None = None,
        *,
        estimate_mb: Callable[[Any], float] = file_size_estimate_mb,
    ):
        self.device = torch.device(device)
        self.budget_mb = float(budget_mb) if budget_mb is not None else runtime.memory_budget_mb()
        self._loader = loader
        self._estimate_mb = estimate_mb
        self._models: OrderedDict[Hashable, Any] = OrderedDict()  # least recently used first
        self._sizes: dict[Hashable, float] = {}  # MiB of each loaded model, measured once when it arrives
        self._reserved: dict[Hashable, float] = {}  # estimates of models loading right now
        self._lock = threading.Lock()
        self._loading: dict[Hashable, threading.Lock] = {}

    def get(
        self,
        key: Hashable,
        *,
        progress: Progress | None = None,
        on_evict: Callable[[Any], None] | None = None,
    ) -> Any:
        """The loaded model for `key` (a ModelKey), loading it (and unloading others to fit) if needed.

        `on_evict(evicted_key)` is called for each model unloaded to make room, so a page can say
        "unloaded vgg16 to stay under the memory budget".
        """
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)  # most recently used last
                return self._models[key]
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._models:
                    self._models.move_to_end(key)
                    return self._models[key]
            estimate = float(self._estimate_mb(key))
            with self._lock:
                evicted = self._evict_for(estimate)
                if self._used_locked() + estimate > self.budget_mb:
                    # Larger than the budget on its own (or beside loads in flight): load it anyway.
                    _log.warning(
                        "%s (about %.0f MB) does not fit the %.0f MB memory budget beside %.0f MB; loading it anyway",
                        key,
                        estimate,
                        self.budget_mb,
                        self._used_locked(),
                    )
                self._reserved[key] = estimate
            try:
                self._after_evicting(evicted, on_evict)
                model = self._loader(key, self.device, progress=progress)
            finally:
                with self._lock:
                    self._reserved.pop(key, None)
            size = float(model.memory_mb)
            with self._lock:
                self._models[key] = model
                self._sizes[key] = size
                # The estimate can be low: trim again with the real size, never the newcomer.
                evicted = self._evict_for(0.0, keep=key)
            self._after_evicting(evicted, on_evict)
            return model

    def _evict_for(self, needed_mb: float, keep: Hashable | None = None) -> list:
        """Under self._lock: unload least recently used models until `needed_mb` more fits."""
        evicted = []
        while self._models and self._used_locked() + needed_mb > self.budget_mb:
            victim = next((k for k in self._models if k != keep), None)
            if victim is None:
                break
            del self._models[victim]
            self._sizes.pop(victim, None)
            evicted.append(victim)
        return evicted

    def _after_evicting(self, evicted: list, on_evict: Callable[[Any], None] | None) -> None:
        if not evicted:
            return
        _log.info("unloaded %s to stay under the %.0f MB memory budget", ", ".join(map(str, evicted)), self.budget_mb)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if on_evict:
            for key in evicted:
                on_evict(key)

    def _used_locked(self) -> float:
        return sum(self._sizes.values()) + sum(self._reserved.values())

    def used_mb(self) -> float:
        """MiB held by the loaded models (what each one's `memory_mb` says)."""
        with self._lock:
            return sum(self._sizes.values())

    def loaded(self) -> list:
        """The keys of the loaded models, least recently used first."""
        with self._lock:
            return list(self._models)

    def models(self) -> list:
        """The loaded models themselves (whatever the loader made of them), least recently used first;
        reading them does not count as using them."""
        with self._lock:
            return list(self._models.values())

    def unload(self, key: Hashable | None = None) -> None:
        """Forget one model (or all); memory returns once no request still holds it."""
        with self._lock:
            if key is None:
                self._models.clear()
                self._sizes.clear()
            else:
                self._models.pop(key, None)
                self._sizes.pop(key, None)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
