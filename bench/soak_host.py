"""The app as a small host runs it: `streamlit run app.py` in a memory-limited group on a few cores.

Streamlit Community Cloud gives the whole app one process in a container of about 2.7 GB on one or two
cores, and the kernel's OOM killer ends the process (every visitor's session) at the limit. `SmallHost`
starts the app the same way where the OS lets this process make a memory cgroup (v1 or v2, as root); the
app then reads that limit itself (core.jobs.limits). Elsewhere it falls back to a soft limit: the app is
told ZOOSCOPE_MEMORY_LIMIT_MB, and the peak is measured from the outside. Either way the app's CPUs are
the first `cores` of this machine (sched_setaffinity), and its resident memory is sampled every 0.2 s.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.jobs.limits import anonymous_rss_mb  # noqa: E402

CGROUP_V1 = Path("/sys/fs/cgroup/memory")
CGROUP_V2 = Path("/sys/fs/cgroup")
STARTUP_TIMEOUT_S = 120
MB = 2**20


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    """Until Streamlit at `url` answers its health check; RuntimeError if `process` exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"streamlit did not become healthy within {timeout_s:.0f} s")


def _writable_group(name: str) -> tuple[str, Path] | None:
    """A new memory cgroup this process may fill, as ("v1" | "v2", its folder); None where the OS says no."""
    if (CGROUP_V1 / "memory.limit_in_bytes").exists():
        group = CGROUP_V1 / name
    elif (CGROUP_V2 / "cgroup.controllers").exists() and "memory" in (CGROUP_V2 / "cgroup.controllers").read_text():
        group = CGROUP_V2 / name
    else:
        return None
    try:
        group.mkdir(exist_ok=True)
    except OSError:
        return None
    return ("v1" if group.parent == CGROUP_V1 else "v2"), group


class SmallHost:
    """The app on `cores` CPUs under `memory_limit_mb`: a cgroup where possible, else a soft limit."""

    def __init__(self, folder: Path, *, memory_limit_mb: int, cores: int, env: dict[str, str] | None = None):
        self.folder = folder
        self.memory_limit_mb = memory_limit_mb
        self.cores = max(1, min(cores, os.cpu_count() or 1))
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "server.log"
        self.peak_rss_mb = 0.0
        self.peak_anon_mb = 0.0  # RSS less the file pages it maps (weights read by mmap are page cache)
        self._env = env or {}
        self._group = _writable_group(f"zooscope-soak-{os.getpid()}-{self.port}")
        self._sampling = threading.Event()
        self.process: subprocess.Popen | None = None

    @property
    def app_cpus(self) -> set[int]:
        """The CPUs the app runs on: the first `cores` this process may use."""
        return set(sorted(os.sched_getaffinity(0))[: self.cores])

    @property
    def other_cpus(self) -> set[int]:
        """The CPUs left: where the browsers run, so that they do not take the app's (empty if none are left)."""
        return set(os.sched_getaffinity(0)) - self.app_cpus

    @property
    def limit_kind(self) -> str:
        """How the limit is enforced: "cgroup v1", "cgroup v2" or "soft (ZOOSCOPE_MEMORY_LIMIT_MB)"."""
        return f"cgroup {self._group[0]}" if self._group else "soft (ZOOSCOPE_MEMORY_LIMIT_MB)"

    def start(self) -> SmallHost:
        env = {**os.environ, "ZOOSCOPE_OFFLINE": os.environ.get("ZOOSCOPE_OFFLINE", "1"), **self._env}
        if self._group is None:
            env["ZOOSCOPE_MEMORY_LIMIT_MB"] = str(self.memory_limit_mb)
        else:
            env.pop("ZOOSCOPE_MEMORY_LIMIT_MB", None)  # the app reads its cgroup's limit itself
            self._set_limit()
        # glibc's allocator settings the app is run with (`make run`).
        for line in (ROOT / "malloc.env").read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                key, _, value = line.partition("=")
                env.setdefault(key.strip(), value.strip())
        command = [
            sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
            "--server.headless=true", f"--server.port={self.port}", "--server.address=127.0.0.1",
            "--server.fileWatcherType=none", "--browser.gatherUsageStats=false",
        ]  # fmt: skip
        cpus = self.app_cpus
        procs = (self._group[1] / "cgroup.procs") if self._group else None

        def enter_host() -> None:  # in the child, before exec: its CPUs and its memory group
            os.sched_setaffinity(0, cpus)
            if procs is not None:
                procs.write_text(str(os.getpid()))

        with open(self.log, "wb") as output:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, preexec_fn=enter_host
            )
        self._sampling.set()
        threading.Thread(target=self._sample_rss, daemon=True).start()
        self._wait_healthy()
        return self

    def _set_limit(self) -> None:
        assert self._group is not None
        kind, group = self._group
        limit = str(self.memory_limit_mb * MB)
        if kind == "v1":
            (group / "memory.limit_in_bytes").write_text(limit)
            swap = group / "memory.memsw.limit_in_bytes"
            if swap.exists():  # no swapping past the limit either: the host has none
                swap.write_text(limit)
        else:
            (group / "memory.max").write_text(limit)
            (group / "memory.swap.max").write_text("0") if (group / "memory.swap.max").exists() else None

    def _wait_healthy(self) -> None:
        assert self.process is not None
        try:
            wait_healthy(self.url, self.process, STARTUP_TIMEOUT_S)
        except RuntimeError as error:
            raise RuntimeError(f"{error}:\n{self.log_tail()}") from error

    def _sample_rss(self) -> None:
        while self._sampling.is_set() and self.alive:
            try:
                rss = psutil.Process(self.process.pid).memory_info().rss / MB  # type: ignore[union-attr]
                anon = anonymous_rss_mb(Path(f"/proc/{self.process.pid}/status")) or 0.0  # type: ignore[union-attr]
            except (psutil.Error, OSError):
                break
            self.peak_rss_mb = max(self.peak_rss_mb, rss)
            self.peak_anon_mb = max(self.peak_anon_mb, anon)
            time.sleep(0.2)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def peak_group_mb(self) -> float | None:
        """The group's own peak (resident and page cache together, as the kernel charges it)."""
        if self._group is None:
            return None
        kind, group = self._group
        name = "memory.max_usage_in_bytes" if kind == "v1" else "memory.peak"
        try:
            return int((group / name).read_text()) / MB
        except (OSError, ValueError):
            return None

    def oom_kills(self) -> int:
        """Processes the kernel's OOM killer ended in the group (a soft limit: 1 if the app died by SIGKILL)."""
        if self._group is None:
            return int(self.process is not None and self.process.returncode == -9)
        kind, group = self._group
        try:
            text = (group / ("memory.oom_control" if kind == "v1" else "memory.events")).read_text()
        except OSError:
            return 0
        counts = dict(line.split() for line in text.splitlines() if len(line.split()) == 2)
        return int(counts.get("oom_kill", 0))

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def tracebacks(self) -> int:
        """Tracebacks the app printed (a script run's exception, a failed job)."""
        if not self.log.exists():
            return 0
        return self.log.read_text(errors="replace").count("Traceback (most recent call last)")

    def stop(self) -> None:
        self._sampling.clear()
        if self.process is not None and self.alive:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._group is not None:
            for _ in range(20):  # the group empties a moment after its last process
                try:
                    self._group[1].rmdir()
                    break
                except OSError:
                    time.sleep(0.1)
