"""The soak: many visitors' heavy flows at once on one small host, and each flow alone for comparison.

`soak()` starts the app as a small host runs it (bench/soak_host.py: a memory cgroup where the OS allows
it, else a soft limit; the first `cores` CPUs), optionally runs each flow alone first (its time alone,
on the warm app), then opens `sessions` browser sessions at once, each doing one flow of
bench/soak_flows.py in turn (finetune, features, compare, inside, classify, finetune, ...). The classify
sessions start `classify_delay_s` later, so that they ask while the heavy work runs. It returns what
happened: every flow's time and error, the app's peak memory, whether the kernel killed anything, and
the tracebacks the app logged. bench/bench_soak.py prints it; tests/e2e/test_soak_browser.py runs a
short one and asserts it.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from bench.soak_flows import FLOWS, FlowResult, run_flow
from bench.soak_host import SmallHost

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
ORDER = ("finetune", "features", "compare", "inside", "classify")


@dataclass
class SoakReport:
    sessions: int
    cores: int
    memory_limit_mb: int
    limit_kind: str
    alone: dict[str, float] = field(default_factory=dict)  # flow -> seconds, run alone on the warm app
    alone_server_ms: dict[str, float] = field(default_factory=dict)  # flow -> the latency its page reported
    together: list[FlowResult] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    peak_anon_mb: float = 0.0
    peak_group_mb: float | None = None
    oom_kills: int = 0
    alive: bool = True
    tracebacks: int = 0
    log_tail: str = ""
    log: str = ""  # the app's log file

    @property
    def errors(self) -> list[FlowResult]:
        return [result for result in self.together if not result.ok]

    def bound(self) -> float:
        """The issue's goal: each flow at most 1.5 x (sessions / cores) x its time alone."""
        return 1.5 * self.sessions / self.cores

    def slowdowns(self) -> dict[str, float]:
        """Per flow, its slowest session's time over its time alone."""
        slowest: dict[str, float] = {}
        for result in self.together:
            slowest[result.flow] = max(slowest.get(result.flow, 0.0), result.seconds)
        return {flow: seconds / self.alone[flow] for flow, seconds in slowest.items() if self.alone.get(flow)}


def plan(sessions: int, flows: tuple[str, ...] = ORDER) -> list[str]:
    """Which flow each session does: the flows in turn, so every flow runs in at least one session."""
    return list(itertools.islice(itertools.cycle(flows), sessions))


Jobs = list[tuple[str, int, float]]  # (flow, session, delay in seconds)


async def _run_all(url: str, jobs: Jobs, timeout_s: float, options: dict[str, dict]) -> list[FlowResult]:
    from playwright.async_api import async_playwright

    chromium = os.environ.get("ZOOSCOPE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        try:
            return list(
                await asyncio.gather(
                    *(
                        run_flow(
                            browser, url, flow, session, timeout_s=timeout_s, delay_s=delay, options=options.get(flow)
                        )
                        for flow, session, delay in jobs
                    )
                )
            )
        finally:
            await browser.close()


def _run_in_own_thread(
    url: str, jobs: Jobs, timeout_s: float, options: dict[str, dict], cpus: set[int] | None = None
) -> list[FlowResult]:
    """`_run_all` on an event loop of its own thread: the caller's thread may already hold one (pytest's
    sync Playwright in the browser tests). With `cpus`, the browsers run there: a visitor's browser runs
    on the visitor's machine, not on the host's cores."""
    outcome: dict[str, object] = {}

    def work() -> None:
        try:
            if cpus:
                os.sched_setaffinity(0, cpus)  # this thread's, inherited by Playwright's driver and Chromium
            outcome["results"] = asyncio.run(_run_all(url, jobs, timeout_s, options))
        except BaseException as error:  # noqa: BLE001 - handed back to the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=work, name="zooscope-soak-browser")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["results"]  # type: ignore[return-value]


def soak(
    *,
    sessions: int,
    memory_limit_mb: int,
    cores: int = 2,
    flows: tuple[str, ...] = ORDER,
    alone: bool = True,
    timeout_s: float = 900,
    classify_delay_s: float = 20,
    folder: Path | None = None,
    flow_options: dict[str, dict] | None = None,
) -> SoakReport:
    unknown = set(flows) - set(FLOWS)
    if unknown:
        raise ValueError(f"unknown flows: {sorted(unknown)}; known: {sorted(FLOWS)}")
    folder = folder or Path(tempfile.mkdtemp(prefix="zooscope-soak-"))
    options = flow_options or {}
    # The queue's comings and goings (starts, waits, pauses) in the app's log, kept with the report.
    host = SmallHost(folder, memory_limit_mb=memory_limit_mb, cores=cores, env={"ZOOSCOPE_LOG_LEVEL": "INFO"})
    report = SoakReport(sessions, host.cores, memory_limit_mb, host.limit_kind, log=str(host.log))
    host.start()
    try:
        if alone:
            for flow in dict.fromkeys(flows):
                (result,) = _run_in_own_thread(host.url, [(flow, 0, 0.0)], timeout_s, options, host.other_cpus)
                if result.ok:
                    report.alone[flow] = result.seconds
                    if result.server_ms is not None:
                        report.alone_server_ms[flow] = result.server_ms
        jobs = [
            (flow, index + 1, classify_delay_s if flow == "classify" else 0.0)
            for index, flow in enumerate(plan(sessions, flows))
        ]
        report.together = _run_in_own_thread(host.url, jobs, timeout_s, options, host.other_cpus)
    finally:
        report.alive = host.alive
        report.peak_rss_mb = host.peak_rss_mb
        report.peak_anon_mb = host.peak_anon_mb
        report.peak_group_mb = host.peak_group_mb()
        report.oom_kills = host.oom_kills()
        report.tracebacks = host.tracebacks()
        report.log_tail = host.log_tail()
        host.stop()
    return report
