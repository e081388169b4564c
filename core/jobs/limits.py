"""How much memory this process may use, and how much it uses: what the job queue admits work by.

The limit comes from `ZOOSCOPE_MEMORY_LIMIT_MB` when it is set (a soft limit, for a host whose
cgroup this process cannot read, or for a test), else from the cgroup the process runs in (v2
`memory.max`, else v1 `memory.limit_in_bytes`), else from the machine's memory. A container
often sees all of its host's memory but is killed at its cgroup's limit (Streamlit Community
Cloud: 2.7 GB), so the cgroup is read first.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import threading
from collections.abc import Mapping
from pathlib import Path

import psutil

MEMORY_LIMIT_ENV = "ZOOSCOPE_MEMORY_LIMIT_MB"
CGROUP_V2_MEMORY_MAX = Path("/sys/fs/cgroup/memory.max")
CGROUP_V1_MEMORY_LIMIT = Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")
# cgroup v1 writes a huge number (2^63 rounded to pages) for "no limit".
_V1_UNLIMITED = 1 << 60

_log = logging.getLogger(__name__)


def parse_memory_max(text: str) -> float | None:
    """MiB from a cgroup's memory limit file ("2147483648" -> 2048.0); None for "max", junk or no limit."""
    value = text.strip()
    if not value or value == "max":
        return None
    try:
        limit = int(value)
    except ValueError:
        return None
    if limit <= 0 or limit >= _V1_UNLIMITED:
        return None
    return limit / 2**20


def cgroup_memory_limit_mb(
    v2_max: Path = CGROUP_V2_MEMORY_MAX, v1_limit: Path = CGROUP_V1_MEMORY_LIMIT, *, cgroup_file: Path | None = None
) -> float | None:
    """This process's cgroup memory limit in MiB, or None where there is none (or none can be read).

    With cgroup v1 the process may sit in a child group (`/proc/self/cgroup` names it): that group's
    own limit is what the kernel enforces, so it is read first.
    """
    for path in (*_own_v1_group(cgroup_file), v2_max, v1_limit):
        try:
            limit = parse_memory_max(path.read_text())
        except OSError:
            continue
        if limit is not None:
            return limit
    return None


def _own_v1_group(cgroup_file: Path | None) -> list[Path]:
    """The v1 memory controller's file for the group this process is in ("5:memory:/zooscope")."""
    try:
        lines = (cgroup_file or Path("/proc/self/cgroup")).read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        _, controllers, group = line.split(":", 2)
        if "memory" in controllers.split(",") and group not in ("", "/"):
            return [Path("/sys/fs/cgroup/memory") / group.lstrip("/") / "memory.limit_in_bytes"]
    return []


def memory_limit_mb(env: Mapping[str, str] | None = None) -> float:
    """MiB this process may use: ZOOSCOPE_MEMORY_LIMIT_MB, else its cgroup's limit, else the machine's memory."""
    env = os.environ if env is None else env
    raw = env.get(MEMORY_LIMIT_ENV, "").strip()
    if raw:
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if value > 0:
            return value
        _log.warning("%s=%r is not a positive number of MB; reading the cgroup", MEMORY_LIMIT_ENV, raw)
    machine = psutil.virtual_memory().total / 2**20
    cgroup = cgroup_memory_limit_mb()
    return min(cgroup, machine) if cgroup is not None else machine


def anonymous_rss_mb(status: Path = Path("/proc/self/status")) -> float | None:
    """RssAnon of a /proc/PID/status file, in MiB: the memory only that process holds, what the kernel
    cannot give back and the OOM killer weighs; None where the file has no such line."""
    for line in status.read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024  # kB
    return None


def process_memory_mb(status: Path = Path("/proc/self/status")) -> float:
    """This process's memory in MiB that the kernel cannot give back: its anonymous resident pages (Linux's
    RssAnon). The file pages it maps (torch's libraries, weights read through mmap) are page cache the
    kernel drops under pressure; counted, they would keep a 2 GB host's line from ever running two jobs.
    Elsewhere, the resident set."""
    try:
        anonymous = anonymous_rss_mb(status)
    except (OSError, ValueError, IndexError):
        anonymous = None
    return anonymous if anonymous is not None else psutil.Process().memory_info().rss / 2**20


def lower_thread_priority(nice: int) -> None:
    """Run the calling thread, and the threads it starts from now on, at OS priority `nice` (Linux: 0 normal,
    19 lowest) where it runs higher. Raising it back would need privileges: it lasts the thread's life, so
    a process's main thread (a command line's run, a test runner) is left as it is."""
    if nice <= 0 or not hasattr(os, "setpriority") or threading.current_thread() is threading.main_thread():
        return
    thread = threading.get_native_id()
    try:
        if os.getpriority(os.PRIO_PROCESS, thread) < nice:
            os.setpriority(os.PRIO_PROCESS, thread, nice)
    except OSError:
        pass  # not allowed here: the line still pauses long work for short work


@functools.cache
def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The processor's name (read once: a fine-tune page asks for its host's key on every render)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"
