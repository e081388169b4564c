"""The job queue as the pages see it: one queue per process, shared by every session; a person's place
in line, the wait, and a way out.

Heavy work on a page runs inside `in_line(...)`: the script run waits its turn (drawing its place in
line and the estimated wait, with a Cancel button), then does the work itself, so everything it draws
stays in the page. A click while waiting reruns the page and leaves the line; a closed tab is noticed
by the queue's janitor (Streamlit's runtime says which sessions are still open) and frees its place.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from core.jobs.queue import Job, JobQueue, queue_for_this_host
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


@st.cache_resource(show_spinner=False)
def job_queue() -> JobQueue:
    """The process's one queue for heavy work: a slot per usable CPU, admitted by the memory limit."""
    return queue_for_this_host(is_alive=session_is_alive)


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


@contextmanager
def in_line(kind: str, label: str, *, memory_mb: float, estimate_s: float | None = None) -> Iterator[Job]:
    """Wait for this session's turn at heavy work, showing the place in line, then run the block."""
    queue = job_queue()
    status = st.empty()

    def on_wait(job: Job) -> None:
        status.info(waiting_text(queue, job), icon=":material/hourglass_top:")

    with queue.admitted(
        kind=kind, label=label, owner=session_id(), memory_mb=memory_mb, estimate_s=estimate_s, on_wait=on_wait
    ) as job:
        status.empty()
        yield job
