"""The job queue as the pages see it: one queue per process, shared by every session; a person's place
in line, the wait, and a way out.

Heavy work on a page runs inside `in_line(...)`: the script run waits its turn (drawing its place in
line and the estimated wait, with a Cancel button), then does the work itself, so everything it draws
stays in the page. A click while waiting reruns the page and leaves the line; a closed tab is noticed
by the queue's janitor (Streamlit's runtime says which sessions are still open) and frees its place.
Light work never waits: inside `light_work()` it runs at once, and trainings pause for it.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from core.jobs.host import queue_for_this_host
from core.jobs.queue import Job, JobCancelled, JobQueue
from ui.text import duration


def session_id() -> str:
    """This browser session's id (a stable stand-in where there is no Streamlit runtime, as in AppTest)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    context = get_script_run_ctx()
    return context.session_id if context is not None else "no-session"


def session_is_alive(owner: str) -> bool:
    """Whether the browser session `owner` is still open (always, where there is no Streamlit server)."""
    from streamlit import runtime

    if not runtime.exists():
        return True
    return runtime.get_instance().is_active_session(owner)


@functools.cache  # once per process: a cleared st.cache_resource must not add a second handler
def _log_if_asked() -> None:
    if level := os.environ.get("ZOOSCOPE_LOG_LEVEL"):  # the line's comings and goings in the server's log
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger("core").addHandler(handler)
        logging.getLogger("core").setLevel(level.upper())


@st.cache_resource(show_spinner=False)
def job_queue() -> JobQueue:
    """The process's one queue for heavy work: a slot per usable CPU, admitted by the memory limit."""
    _log_if_asked()
    return queue_for_this_host(is_alive=session_is_alive)


def light_work():
    """Around light work (classifying a few photos): it runs at once, and trainings give way to it."""
    return job_queue().light()


def waiting_text(queue: JobQueue, job: Job) -> str:
    """ "Waiting for the server: 2nd in line, about 1 min 05 s (1 job of other visitors running)." """
    place = queue.place(job)
    ahead = "first in line" if place == 1 else f"{_ordinal(place)} in line"
    wait = queue.wait_estimate_s(job)
    about = f", {duration(wait)}" if wait else ""
    running = sum(other.state == "running" for other in queue.jobs())
    others = f" ({running} job{'s' if running != 1 else ''} of other visitors running)" if running else ""
    return f"Waiting for the server: {ahead}{about}{others}."


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _cancelled_key(kind: str, label: str) -> str:
    return f"cancelled_job_{kind}_{label}"


def draw_waiting(status, cancel_slot, queue: JobQueue, job: Job, *, button: bool = True) -> None:
    """The place in line and the wait in `status`; with `button`, a Cancel button in `cancel_slot`
    (drawn once per job: a widget's key may appear once per script run)."""
    status.info(waiting_text(queue, job), icon=":material/hourglass_top:")
    if button:
        cancel_slot.button(
            "Cancel",
            key=f"cancel_job_{job.id}",
            on_click=_mark_cancelled,
            args=(job.kind, job.label),
            icon=":material/close:",
            help="Leave the line: this work does not run.",
        )


def _mark_cancelled(kind: str, label: str) -> None:
    # Runs before the rerun the click starts: the script run that waited stops at its next drawing
    # (leaving the line through JobQueue.admitted's finally), and the rerun must not queue again.
    st.session_state[_cancelled_key(kind, label)] = True


def _start_again(kind: str, label: str) -> None:
    st.session_state.pop(_cancelled_key(kind, label), None)


def _show_cancelled(kind: str, label: str, where: str = "") -> None:
    st.info(f"Cancelled{where}: {label}.", icon=":material/cancel:")
    st.button(
        "Start again", key=f"start_again_{kind}_{label}", on_click=_start_again, args=(kind, label),
        icon=":material/replay:",
    )  # fmt: skip


@contextmanager
def in_line(kind: str, label: str, *, memory_mb: float, estimate_s: float | None = None) -> Iterator[Job]:
    """Wait for this session's turn at heavy work, showing the place in line and a Cancel button, then
    run the block.

    Raises JobCancelled (after saying so in the page, with a Start again button) when the person
    cancelled this work (`kind`, `label`) in an earlier run, or when the queue cancelled it (the
    session closed); the page stops that section. A Cancel click reruns the page: this run stops
    where it waits and leaves the line.
    """
    if st.session_state.get(_cancelled_key(kind, label)):
        _show_cancelled(kind, label)
        raise JobCancelled("Cancelled.")
    queue = job_queue()
    status, cancel_slot = st.empty(), st.empty()
    drawn: set[int] = set()
    last_place = [0]

    def on_wait(job: Job) -> None:
        last_place[0] = queue.place(job) or last_place[0]
        draw_waiting(status, cancel_slot, queue, job, button=job.id not in drawn)
        drawn.add(job.id)

    try:
        with queue.admitted(
            kind=kind, label=label, owner=session_id(), memory_mb=memory_mb, estimate_s=estimate_s, on_wait=on_wait
        ) as job:
            status.empty()
            cancel_slot.empty()
            yield job
    except JobCancelled:
        status.empty()
        cancel_slot.empty()
        where = f" while {_ordinal(last_place[0])} in line" if last_place[0] else ""
        _show_cancelled(kind, label, where)
        raise
