"""The measured per-image costs of fine-tuning (core.finetune.estimate), kept once per process and on disk.

Measuring takes seconds of a training step per depth, so it is done once per backbone, depth,
training resolution, the settings that change a step's cost (head, adapting batch norm, flips) and
host (CPU or GPU model, torch threads, torch version): every session shares the answer, and a JSON
file in the cache folder (ZOOSCOPE_CACHE_DIR) keeps it across restarts. What the dataset is does not
enter: a cost is per image.

`shared_job` hands every session that asks for the same key the one measuring job already under
way, so ten sessions opening the page start one measurement, not ten.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from core.finetune.estimate import DepthCost
from core.jobs.limits import cpu_model

FILE_NAME = "finetune-costs.json"
FORMAT = 2  # DepthCost's fields changed (warmed-up timings): entries of another format are measured again

J = TypeVar("J")
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CostKey:
    """What a step's per-image cost depends on (the depth is added per entry)."""

    backbone: str
    train_size: int
    head: str
    adapt_batchnorm: bool
    flip: bool
    host: str

    def entry(self, depth: str) -> str:
        """One depth's entry in the file: every part of the key, readable."""
        flags = f"head={self.head} adapt_batchnorm={self.adapt_batchnorm} flip={self.flip}"
        return f"{self.backbone} | {depth} | {self.train_size} px | {flags} | {self.host}"


def host_key(device: str = "cpu") -> str:
    """The processor the costs were measured on, torch's threads and torch's version: a cost measured
    elsewhere says nothing here."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        processor = torch.cuda.get_device_name(torch.device(device))
    else:
        processor = cpu_model()
    return f"{processor} · {torch.get_num_threads()} threads · torch {torch.__version__}"


class CostCache:
    """Measured costs by key and depth, shared by every session; read from and written to `path` (JSON)."""

    def __init__(self, path: Path | None):
        self.path = path
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] | None = None  # read from the file on first use
        self._jobs: dict[CostKey, Any] = {}

    def get(self, key: CostKey, depths: tuple[str, ...]) -> dict[str, DepthCost] | None:
        """The costs of every one of `depths` for `key`, or None if any is not measured yet."""
        with self._lock:
            entries = self._loaded_locked()
            found = [entries.get(key.entry(depth)) for depth in depths]
        if any(entry is None for entry in found):
            return None
        return {depth: DepthCost(**entry) for depth, entry in zip(depths, found, strict=True) if entry is not None}

    def put(self, key: CostKey, costs: dict[str, DepthCost]) -> None:
        """Keep `costs` (depth -> cost) for `key`, in memory and in the file."""
        with self._lock:
            entries = self._loaded_locked()
            for depth, cost in costs.items():
                entries[key.entry(depth)] = dataclasses.asdict(cost)
            self._write_locked(entries)

    def shared_job(self, key: CostKey, submit: Callable[[], J], *, reusable: Callable[[J], bool]) -> J:
        """The job measuring `key`: the one already asked for while `reusable(job)`, else `submit()`'s new one."""
        with self._lock:
            job = self._jobs.get(key)
            if job is None or not reusable(job):
                job = self._jobs[key] = submit()
            return job

    def _loaded_locked(self) -> dict[str, dict[str, Any]]:
        if self._entries is None:
            self._entries = self._read()
        return self._entries

    def _read(self) -> dict[str, dict[str, Any]]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as error:
            _log.warning("ignoring the fine-tune cost cache %s: %s", self.path, error)
            return {}
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("entries"), dict):
            return {}
        fields = {field.name for field in dataclasses.fields(DepthCost)}
        return {k: v for k, v in data["entries"].items() if isinstance(v, dict) and set(v) == fields}

    def _write_locked(self, entries: dict[str, dict[str, Any]]) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=self.path.parent, prefix=".costs-", delete=False) as handle:
                json.dump({"format": FORMAT, "entries": entries}, handle, indent=1, sort_keys=True)
            os.replace(handle.name, self.path)  # whole or not at all: another process may read it meanwhile
        except OSError as error:
            _log.warning("could not keep the fine-tune costs in %s: %s", self.path, error)


def cache_file() -> Path:
    """Where the costs are kept: a file in the cache folder (ZOOSCOPE_CACHE_DIR, default ~/.cache/zooscope)."""
    from core.engines.onnx_cache import cache_root

    return cache_root().path / FILE_NAME
