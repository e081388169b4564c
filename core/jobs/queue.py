"""One line for the heavy work of every session: admitted by cores and memory, in order, cancellable.

Every visitor is a thread in one process on a small host. Heavy work (training, embedding a set,
stage maps, exports, quantization, measuring many models) goes through one `JobQueue`:

- At most `slots` jobs run at once (the CPUs this process may use), and a job starts only when its
  memory estimate fits: what the process holds now, plus what the running jobs were promised, plus
  the newcomer, stays under `safety` of the limit. The running jobs' promises are counted in full
  although part of them is already in the process's memory: conservative on purpose, since the
  price of a wrong guess is the OOM killer ending every session at once.
- The line is first come, first served: a job never overtakes one that asked before it, so its
  place in line only ever goes down. One exception keeps short work short: long jobs (training)
  run in at most all slots but one, and short jobs may start past long ones that wait. The job at
  the head starts when nothing runs, whatever its estimate (it could never fit better).
- Long jobs give way: between its steps a training calls `give_way()`, which pauses it while short
  work runs (a job neither long nor background, or light work inside `light()`), so that short work
  gets the cores to itself. A paused training holds no core and no activations (it pauses between micro-
  batches), only what is already in the process's memory: so short jobs count only each other
  against the slots and the memory, start once the trainings have paused, and keep them paused
  until they end. For light work a pause lasts at most `max_pause_s`; after a pause that long the
  training runs at least `min_run_s` before it gives way again, so a stream of classifying slows it
  but never stops it.
- A waiting job can be cancelled and leaves the line; a running one is asked to stop (`cancelled()`
  turns true; work that checks it raises JobCancelled or returns early).
- The wait a page shows adds up the time left of the jobs ahead: each one's own estimate where its
  page made one, else what jobs of its kind took here lately (a moving average).
- Jobs belong to a session (`owner`); when `is_alive(owner)` turns false the session has closed, and
  its jobs are cancelled, so a closed tab frees its place.

Light work (classifying a few photos) never waits in line: it runs at once inside `light()`, which
only tells the trainings to give way. Nothing here imports streamlit: the page draws a job from its fields.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from core.errors import ZooScopeError
from core.jobs.limits import lower_thread_priority

JobState = Literal["waiting", "running", "done", "failed", "cancelled"]
FINISHED: tuple[JobState, ...] = ("done", "failed", "cancelled")
# Kinds of job that take minutes: they leave one slot to the rest (see _long_lane_full_locked).
LONG_KINDS = frozenset({"train"})
# Work nobody waits on (the fine-tune page's time estimates): trainings do not pause for it.
BACKGROUND_KINDS = frozenset({"estimate"})
# A finished job's weight in its kind's typical duration (a moving average: recent jobs count most).
TYPICAL_WEIGHT = 0.5
DEFAULT_SAFETY = 0.9  # of the memory limit: what the kernel's own pages and the allocator's slack need
MAX_PAUSE_S = 30.0  # the longest a long job gives way at a time
MIN_RUN_S = 10.0  # how long it then runs before it gives way again
LONG_JOB_NICE = 10  # the OS priority of a long job's threads (Linux nice: 0 normal, 19 lowest)

_log = logging.getLogger(__name__)
_ids = itertools.count(1)
# The job each thread is running now, if any, and its queue: work nested in it (a training that first
# exports its backbone) is part of it, and must not wait in line behind the slot it holds itself.
_running_here = threading.local()


class JobCancelled(ZooScopeError):
    """Raised by work that noticed it was cancelled; the job ends as cancelled."""


@dataclass(eq=False)
class Job:
    """One piece of heavy work in the line: what it is, whose it is, what it needs, where it stands."""

    kind: str  # "train", "embed", "estimate", ...
    label: str  # a sentence for the page: "Fine-tuning efficientnet_lite0 (whole network)"
    owner: str  # the session that asked
    memory_mb: float  # estimated before it starts
    estimate_s: float | None = None  # how long it should take once running, where known
    id: int = field(default_factory=lambda: next(_ids))
    state: JobState = "waiting"
    result: Any = None
    error: str = ""
    progress_done: int = 0
    progress_total: int = 0
    progress_message: str = ""
    paused: bool = False  # a long job giving way to short work just now
    beside_long: bool = False  # a short job admitted beside long jobs: they stay paused while it runs
    submitted_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _started: threading.Event = field(default_factory=threading.Event, repr=False)
    _finished: threading.Event = field(default_factory=threading.Event, repr=False)
    _no_pause_until: float = 0.0  # time.monotonic(): after a full-length pause, it runs a while first

    def progress(self, done: int, total: int, message: str) -> None:
        """The core.progress.Progress callback long work reports through."""
        self.progress_done, self.progress_total, self.progress_message = done, total, message

    def cancelled(self) -> bool:
        """True once the job was cancelled: work that checks it should stop soon."""
        return self._cancel.is_set()

    def check(self) -> None:
        """Raise JobCancelled if the job was cancelled (for work with natural check points)."""
        if self._cancel.is_set():
            raise JobCancelled("The job was cancelled.")

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has finished (or `timeout` seconds passed); True if it finished."""
        return self._finished.wait(timeout)


Work = Callable[[Job], Any]


class JobQueue:
    """The heavy work of every session, admitted by cores and memory, first come first served."""

    def __init__(
        self,
        *,
        slots: int,
        memory_limit_mb: float,
        memory_in_use_mb: Callable[[], float],
        safety: float = DEFAULT_SAFETY,
        long_kinds: frozenset[str] = LONG_KINDS,
        background_kinds: frozenset[str] = BACKGROUND_KINDS,
        is_alive: Callable[[str], bool] | None = None,
        janitor_every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        max_pause_s: float = MAX_PAUSE_S,
        min_run_s: float = MIN_RUN_S,
        long_job_nice: int = LONG_JOB_NICE,
    ):
        if slots < 1:
            raise ValueError("a queue needs at least one slot")
        self.slots = slots
        self.memory_limit_mb = memory_limit_mb
        self.safety = safety
        self.long_kinds = long_kinds
        self.background_kinds = background_kinds
        self._memory_in_use_mb = memory_in_use_mb
        self._is_alive = is_alive
        self._janitor_every_s = janitor_every_s
        self._clock = clock
        self.max_pause_s = max_pause_s
        self.min_run_s = min_run_s
        self.long_job_nice = long_job_nice
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # short work ended: paused long jobs look again
        self._light = 0  # light work running now (`light()`)
        self._waiting: list[Job] = []
        self._running: list[Job] = []
        self._work: dict[int, Work | None] = {}  # None: the job runs in the thread that asked (`admitted`)
        self._janitor: threading.Thread | None = None
        self._typical_s: dict[str, float] = {}  # kind -> seconds jobs of that kind took lately

    # --- asking -----------------------------------------------------------------------------------

    def submit(
        self,
        work: Work,
        *,
        kind: str,
        label: str,
        owner: str,
        memory_mb: float,
        estimate_s: float | None = None,
    ) -> Job:
        """Put `work(job)` in line; it runs in a thread of its own once admitted. Returns the job at once."""
        job = Job(kind=kind, label=label, owner=owner, memory_mb=float(memory_mb), estimate_s=estimate_s)
        job.submitted_at = self._clock()
        with self._lock:
            self._waiting.append(job)
            self._work[job.id] = work
            self._dispatch_locked()
        self._start_janitor()
        return job

    @contextmanager
    def admitted(
        self,
        *,
        kind: str,
        label: str,
        owner: str,
        memory_mb: float,
        estimate_s: float | None = None,
        on_wait: Callable[[Job], None] | None = None,
        poll_s: float = 0.5,
    ) -> Iterator[Job]:
        """Wait in line, then run the block in this thread (a page's script run draws as it works).

        While waiting, `on_wait(job)` is called every `poll_s` seconds (to show the place in line); whatever
        it raises (a click that reruns the page) leaves the line. Raises JobCancelled if the job was cancelled
        (its session closed) before it started; inside the block, `job.cancelled()` says when to stop.
        """
        outer = getattr(_running_here, "job", None)
        if outer is not None and not outer.finished:
            # Nested in a job this thread runs: that job's slot and memory estimate cover it. Waiting in
            # line here would wait for the slot this very thread holds (on a one-core host, forever).
            yield outer
            return
        job = Job(kind=kind, label=label, owner=owner, memory_mb=float(memory_mb), estimate_s=estimate_s)
        job.submitted_at = self._clock()
        with self._lock:
            self._waiting.append(job)
            self._work[job.id] = None
            self._dispatch_locked()
        self._start_janitor()
        state: JobState = "failed"
        try:
            while not job._started.is_set():
                job.check()
                if on_wait is not None:
                    on_wait(job)
                job._started.wait(poll_s)
            self._starting(job)
            _running_here.job, _running_here.queue = job, self
            yield job
            state = "cancelled" if job.cancelled() else "done"
        except JobCancelled:
            state = "cancelled"
            raise
        finally:
            _running_here.job = None
            with self._lock:
                if job in self._waiting:
                    self._waiting.remove(job)
                    self._work.pop(job.id, None)
                    state = "cancelled"
                if job in self._running:
                    self._running.remove(job)
                self._finish_locked(job, state)
                self._dispatch_locked()

    @contextmanager
    def light(self) -> Iterator[None]:
        """Run light work (classifying a few photos) at once, never in line: long jobs give way to it."""
        with self._lock:
            self._light += 1
        try:
            yield
        finally:
            with self._lock:
                self._light -= 1
                self._changed.notify_all()

    def give_way(self, job: Job) -> None:
        """Called by a long job between its steps: pause while short work runs (see the module's notes).
        Raises JobCancelled once the job was cancelled (its session closed): it ends at its next step."""
        job.check()
        if job.kind not in self.long_kinds or time.monotonic() < job._no_pause_until:
            return
        deadline = time.monotonic() + self.max_pause_s
        with self._changed:
            while self._short_work_locked() and not job.cancelled():
                left = deadline - time.monotonic()
                if left <= 0 and not any(running.beside_long for running in self._running):
                    job._no_pause_until = time.monotonic() + self.min_run_s
                    break
                if not job.paused:
                    _log.info("pause %s %r: short work runs", job.kind, job.label)
                    job.paused = True
                    self._changed.notify_all()  # short work waiting for this pause may start
                self._changed.wait(min(left, 0.5) if left > 0 else 0.5)  # a cancel sets no condition: look again
            job.paused = False
        job.check()

    def _await_long_jobs_paused(self, job: Job, timeout_s: float = 60.0) -> None:
        # A short job admitted beside trainings starts once they have paused: until then their
        # activations are live, and the memory it was admitted by does not count them.
        if not job.beside_long:
            return
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not job.cancelled() and time.monotonic() < deadline:
                stepping = [r for r in self._running if r.kind in self.long_kinds and not r.paused]
                if not stepping:
                    return
                self._changed.wait(0.5)
            _log.warning("%r starts although a training has not paused for %.0f s", job.label, timeout_s)

    def _starting(self, job: Job) -> None:
        # In the thread that runs the job, before its work. Light work and the server's own threads (pages,
        # websockets) get the cores first, even inside a training step: a long job's thread, and the torch
        # threads it starts, run at a lower priority.
        self._await_long_jobs_paused(job)
        if job.kind in self.long_kinds:
            lower_thread_priority(self.long_job_nice)

    def _short_work_locked(self) -> bool:
        return self._light > 0 or any(self._gives_way_to(running) for running in self._running)

    def _gives_way_to(self, job: Job) -> bool:
        """Whether trainings pause while `job` runs: short work someone waits for."""
        return job.kind not in self.long_kinds and job.kind not in self.background_kinds

    def cancel(self, job: Job) -> None:
        """A waiting job leaves the line at once; a running one is asked to stop."""
        with self._lock:
            job._cancel.set()
            if job in self._waiting:
                self._waiting.remove(job)
                self._work.pop(job.id, None)
                self._finish_locked(job, "cancelled")
                self._dispatch_locked()

    def close_owner(self, owner: str) -> int:
        """Cancel every unfinished job of `owner` (its session closed); how many there were."""
        with self._lock:
            jobs = [job for job in (*self._waiting, *self._running) if job.owner == owner]
        for job in jobs:
            self.cancel(job)
        return len(jobs)

    # --- where things stand -----------------------------------------------------------------------

    def place(self, job: Job) -> int:
        """1 for the first job waiting, 2 for the next, ...; 0 for a job running or finished."""
        with self._lock:
            return self._waiting.index(job) + 1 if job in self._waiting else 0

    def wait_estimate_s(self, job: Job) -> float | None:
        """About how long until `job` starts: the running jobs' remaining time and the estimates of those
        ahead of it, shared over the slots; None where a needed estimate is unknown, 0 if not waiting."""
        with self._lock:
            if job not in self._waiting:
                return 0.0
            now = self._clock()
            remaining = []
            short = job.kind not in self.long_kinds  # short work waits only for short work
            for running in self._running:
                if short and running.kind in self.long_kinds:
                    continue
                expected = self._expected_s_locked(running)
                if expected is None:
                    return None
                elapsed = now - (running.started_at if running.started_at is not None else now)
                remaining.append(max(expected - elapsed, 0.0))
            for ahead in self._waiting[: self._waiting.index(job)]:
                if short and ahead.kind in self.long_kinds:
                    continue
                expected = self._expected_s_locked(ahead)
                if expected is None:
                    return None
                remaining.append(expected)
        return sum(remaining) / self.slots

    def typical_s(self, kind: str) -> float | None:
        """How long jobs of `kind` took here lately (a moving average of those that finished), if any did."""
        with self._lock:
            return self._typical_s.get(kind)

    def _expected_s_locked(self, job: Job) -> float | None:
        # The job's own estimate where its page made one, else what jobs of its kind took here lately.
        return job.estimate_s if job.estimate_s is not None else self._typical_s.get(job.kind)

    def jobs(self, owner: str | None = None) -> list[Job]:
        """Running then waiting jobs, in order; only `owner`'s when given."""
        with self._lock:
            jobs = [*self._running, *self._waiting]
        return [job for job in jobs if owner is None or job.owner == owner]

    def reserved_mb(self) -> float:
        """MiB promised to the running jobs."""
        with self._lock:
            return sum(job.memory_mb for job in self._running)

    # --- admission --------------------------------------------------------------------------------

    def _long_lane_full_locked(self, job: Job) -> bool:
        # Long jobs (training) take at most all slots but one: beside each other on shared cores they get
        # no faster, and the memory is better kept for short work. On one slot there is no lane to keep.
        if job.kind not in self.long_kinds or self.slots < 2:
            return False
        return sum(running.kind in self.long_kinds for running in self._running) >= self.slots - 1

    def _fits_locked(self, job: Job) -> bool:
        if not self._running:
            return True  # alone it can never fit better: run it rather than wait forever
        # A long job needs a free core and counts every promise. Short work counts only short work: the long
        # jobs pause while it runs, and what they hold then is in the process's memory already.
        counts_all = not self._gives_way_to(job)  # a training, or background work it does not pause for
        counted = [running for running in self._running if counts_all or running.kind not in self.long_kinds]
        return len(counted) < self.slots and self._memory_fits_locked(job, counted)

    def _memory_fits_locked(self, job: Job, beside: list[Job]) -> bool:
        promised = sum(running.memory_mb for running in beside)
        return self._memory_in_use_mb() + promised + job.memory_mb <= self.safety * self.memory_limit_mb

    def _dispatch_locked(self) -> None:
        index, long_waits = 0, False
        while index < len(self._waiting):
            job = self._waiting[index]
            if job.kind in self.long_kinds and (
                long_waits or self._long_lane_full_locked(job) or not self._fits_locked(job)
            ):
                # It keeps its place among the long jobs; short work behind it may start (it never waits
                # behind a training: trainings give way to it anyway).
                long_waits = True
                index += 1
                continue
            if not self._fits_locked(job):
                break  # first come, first served: nothing overtakes a job that does not fit yet
            self._waiting.pop(index)
            work = self._work.pop(job.id)
            job.state = "running"
            job.started_at = self._clock()
            # Admitted only because the trainings will pause: it starts once they have, and keeps them paused.
            job.beside_long = self._gives_way_to(job) and not self._memory_fits_locked(job, self._running)
            self._running.append(job)
            if job.memory_mb > self.safety * self.memory_limit_mb:
                _log.warning(
                    "%s needs about %.0f MB, more than the limit allows; it runs alone", job.label, job.memory_mb
                )
            _log.info(
                "start %s %r (%s) after %.1f s in line, needs %.0f MB; running: %s",
                job.kind, job.label, job.owner[:8], job.started_at - job.submitted_at, job.memory_mb,
                ", ".join(running.kind for running in self._running),
            )  # fmt: skip
            job._started.set()
            if work is not None:
                threading.Thread(target=self._run, args=(job, work), name=f"zooscope-job-{job.id}", daemon=True).start()

    def _run(self, job: Job, work: Work) -> None:
        state: JobState = "done"
        _running_here.job, _running_here.queue = job, self
        try:
            self._starting(job)
            job.result = work(job)
        except JobCancelled:
            state = "cancelled"
        except Exception as error:  # noqa: BLE001 - the job's own failure is reported on its page, not raised here
            state = "failed"
            job.error = str(error) if isinstance(error, ZooScopeError) else f"{type(error).__name__}: {error}"
            _log.exception("job %s (%s) failed", job.id, job.label)
        finally:
            _running_here.job = None
        with self._lock:
            self._running.remove(job)
            self._finish_locked(job, state)
            self._dispatch_locked()

    def _finish_locked(self, job: Job, state: JobState) -> None:
        job.state = state
        job.finished_at = self._clock()
        ran = f"ran {job.finished_at - job.started_at:.1f} s" if job.started_at is not None else "never ran"
        _log.info("%s %s %r (%s), %s", state, job.kind, job.label, job.owner[:8], ran)
        if state == "done" and job.started_at is not None:
            took = job.finished_at - job.started_at
            before = self._typical_s.get(job.kind, took)
            self._typical_s[job.kind] = TYPICAL_WEIGHT * took + (1 - TYPICAL_WEIGHT) * before
        job._finished.set()
        self._changed.notify_all()

    # --- closed sessions --------------------------------------------------------------------------

    def _start_janitor(self) -> None:
        if self._is_alive is None:
            return
        with self._lock:
            if self._janitor is not None:
                return
            self._janitor = threading.Thread(target=self._sweep_forever, name="zooscope-job-janitor", daemon=True)
        self._janitor.start()

    def _sweep_forever(self) -> None:
        while True:
            time.sleep(self._janitor_every_s)
            self.sweep()

    def sweep(self) -> int:
        """Cancel the jobs of sessions that have closed; how many were cancelled."""
        if self._is_alive is None:
            return 0
        owners = {job.owner for job in self.jobs()}
        return sum(self.close_owner(owner) for owner in owners if not self._is_alive(owner))


def give_way() -> None:
    """Long work (a training) calls this between its steps: outside a job, or in a short one, it returns
    at once; in a long job it pauses while short work runs (JobQueue.give_way)."""
    job, queue = getattr(_running_here, "job", None), getattr(_running_here, "queue", None)
    if job is not None and queue is not None:
        queue.give_way(job)
