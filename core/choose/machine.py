"""Where a row was measured: the processor, the cores this process may use, the threads it ran on and
the library versions. Two rows with the same key were measured alike, so a resumed run skips them."""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
from dataclasses import dataclass

from core import runtime
from core.jobs.limits import cpu_model

_LIBRARIES = ("torch", "torchvision", "onnxruntime")


@dataclass(frozen=True)
class Machine:
    cpu_model: str
    cores: int
    threads: int
    versions: str  # "python 3.12.3, torch 2.14.1, ..."

    @property
    def key(self) -> str:
        """A short stable key: equal for the same CPU, cores, threads and versions."""
        text = f"{self.cpu_model}|{self.cores}|{self.threads}|{self.versions}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def columns(self) -> dict[str, object]:
        return {
            "cpu_model": self.cpu_model,
            "cores": self.cores,
            "threads": self.threads,
            "machine": self.key,
            "versions": self.versions,
        }

    def describe(self) -> str:
        return f"{self.cpu_model}, {self.cores} cores, {self.threads} threads"


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def library_versions() -> str:
    return ", ".join([f"python {platform.python_version()}", *(f"{name} {_version(name)}" for name in _LIBRARIES)])


def this_machine(threads: int | None = None) -> Machine:
    """This machine, measuring with `threads` (default: what the app runs torch with)."""
    return Machine(
        cpu_model=cpu_model(),
        cores=runtime.available_cpus(),
        threads=threads or runtime.thread_count(),
        versions=library_versions(),
    )
