"""The process's one job queue, sized for this host: its CPUs and its memory limit."""

from __future__ import annotations

from collections.abc import Callable

from core.jobs.limits import memory_limit_mb, process_memory_mb
from core.jobs.queue import JobQueue


def queue_for_this_host(*, is_alive: Callable[[str], bool] | None = None) -> JobQueue:
    """A queue sized for this host: a slot per CPU this process may use, its memory limit (cgroup or
    ZOOSCOPE_MEMORY_LIMIT_MB), measured against this process's anonymous resident memory."""
    from core.runtime import available_cpus

    return JobQueue(
        slots=available_cpus(),
        memory_limit_mb=memory_limit_mb(),
        memory_in_use_mb=process_memory_mb,
        is_alive=is_alive,
    )
