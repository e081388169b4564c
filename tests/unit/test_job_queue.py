"""The job queue: order, cancel, memory admission, a closed session, failures, estimates of the wait."""

from __future__ import annotations

import threading
import time

import pytest

from core.jobs.limits import cgroup_memory_limit_mb, memory_limit_mb, parse_memory_max
from core.jobs.queue import Job, JobCancelled, JobQueue

WAIT = 10.0  # seconds a test waits for a thread before it calls the queue stuck


class Gate:
    """Work that runs until the test opens its gate, recording the order jobs started in."""

    def __init__(self, started: list[str]):
        self.started = started
        self.opened = threading.Event()

    def __call__(self, job: Job) -> str:
        self.started.append(job.label)
        while not self.opened.wait(0.01):
            job.check()
        return job.label


def make_queue(*, slots=1, limit=1000.0, in_use=100.0, **kwargs) -> JobQueue:
    return JobQueue(slots=slots, memory_limit_mb=limit, memory_in_use_mb=lambda: in_use, safety=1.0, **kwargs)


def until(condition, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the queue")
        time.sleep(0.005)


def test_jobs_run_first_come_first_served_one_slot_at_a_time():
    queue, started = make_queue(slots=1), []
    gates = [Gate(started) for _ in range(3)]
    jobs = [queue.submit(g, kind="train", label=f"job{i}", owner="a", memory_mb=10) for i, g in enumerate(gates)]
    until(lambda: started == ["job0"])
    assert [j.state for j in jobs] == ["running", "waiting", "waiting"]
    assert [queue.place(j) for j in jobs] == [0, 1, 2]
    for gate in gates:
        gate.opened.set()
    for job in jobs:
        assert job.wait(WAIT)
    assert started == ["job0", "job1", "job2"]
    assert [j.result for j in jobs] == ["job0", "job1", "job2"]
    assert all(j.state == "done" for j in jobs)


def test_two_slots_run_two_jobs_at_once():
    queue, started = make_queue(slots=2), []
    gates = [Gate(started) for _ in range(3)]
    jobs = [queue.submit(g, kind="embed", label=f"job{i}", owner="a", memory_mb=10) for i, g in enumerate(gates)]
    until(lambda: len(started) == 2)
    assert jobs[2].state == "waiting" and queue.place(jobs[2]) == 1
    for gate in gates:
        gate.opened.set()
    assert jobs[2].wait(WAIT) and jobs[2].state == "done"


def test_a_job_waits_until_its_memory_fits_and_never_is_overtaken():
    # 1000 MB limit, 100 MB in use: a 600 MB job runs; another 600 MB waits though a slot is free,
    # and a small job behind it waits too (no overtaking: places only ever go down).
    queue, started = make_queue(slots=3), []
    big1, big2, small = Gate(started), Gate(started), Gate(started)
    first = queue.submit(big1, kind="train", label="big1", owner="a", memory_mb=600)
    second = queue.submit(big2, kind="train", label="big2", owner="b", memory_mb=600)
    third = queue.submit(small, kind="train", label="small", owner="c", memory_mb=50)
    until(lambda: started == ["big1"])
    time.sleep(0.05)
    assert (second.state, third.state) == ("waiting", "waiting")
    assert queue.reserved_mb() == 600
    big1.opened.set()
    until(lambda: started[:2] == ["big1", "big2"])
    until(lambda: "small" in started)  # 100 + 600 + 50 fits beside big2
    big2.opened.set()
    small.opened.set()
    assert first.wait(WAIT) and second.wait(WAIT) and third.wait(WAIT)


def test_a_job_larger_than_the_limit_still_runs_when_it_is_alone():
    queue, started = make_queue(slots=2, limit=500), []
    gate = Gate(started)
    job = queue.submit(gate, kind="train", label="huge", owner="a", memory_mb=5000)
    until(lambda: started == ["huge"])
    gate.opened.set()
    assert job.wait(WAIT) and job.state == "done"


def test_memory_in_use_counts_against_the_limit():
    in_use = {"mb": 960.0}
    queue = JobQueue(slots=2, memory_limit_mb=1000, memory_in_use_mb=lambda: in_use["mb"], safety=1.0)
    started: list[str] = []
    gate1, gate2 = Gate(started), Gate(started)
    queue.submit(gate1, kind="train", label="one", owner="a", memory_mb=50)
    second = queue.submit(gate2, kind="train", label="two", owner="b", memory_mb=50)
    until(lambda: started == ["one"])
    assert second.state == "waiting"  # 960 + 50 + 50 > 1000
    in_use["mb"] = 500.0
    gate1.opened.set()  # the next admission happens when a job finishes
    until(lambda: started == ["one", "two"])
    gate2.opened.set()
    assert second.wait(WAIT)


def test_cancel_a_waiting_job_leaves_the_line_and_the_others_move_up():
    queue, started = make_queue(slots=1), []
    gates = [Gate(started) for _ in range(3)]
    jobs = [queue.submit(g, kind="train", label=f"job{i}", owner="a", memory_mb=10) for i, g in enumerate(gates)]
    until(lambda: started == ["job0"])
    queue.cancel(jobs[1])
    assert jobs[1].state == "cancelled" and jobs[1].finished
    assert queue.place(jobs[2]) == 1
    for gate in gates:
        gate.opened.set()
    assert jobs[2].wait(WAIT)
    assert started == ["job0", "job2"]


def test_cancel_a_running_job_stops_it_and_the_next_starts():
    queue, started = make_queue(slots=1), []
    first, second = Gate(started), Gate(started)
    running = queue.submit(first, kind="train", label="first", owner="a", memory_mb=10)
    waiting = queue.submit(second, kind="train", label="second", owner="b", memory_mb=10)
    until(lambda: started == ["first"])
    queue.cancel(running)
    assert running.wait(WAIT) and running.state == "cancelled"
    until(lambda: started == ["first", "second"])
    second.opened.set()
    assert waiting.wait(WAIT) and waiting.state == "done"


def test_a_closed_session_frees_its_place():
    alive = {"a", "b"}
    queue = make_queue(slots=1, is_alive=lambda owner: owner in alive, janitor_every_s=0.02)
    started: list[str] = []
    gates = {name: Gate(started) for name in ("a1", "b1", "b2", "a2")}
    jobs = {name: queue.submit(g, kind="train", label=name, owner=name[0], memory_mb=10) for name, g in gates.items()}
    until(lambda: started == ["a1"])
    alive.discard("b")  # b's tab closed: its running and waiting jobs go
    until(lambda: jobs["b1"].finished and jobs["b2"].finished)
    assert jobs["b1"].state == jobs["b2"].state == "cancelled"
    assert queue.place(jobs["a2"]) == 1
    gates["a1"].opened.set()
    gates["a2"].opened.set()
    assert jobs["a2"].wait(WAIT)
    assert started == ["a1", "a2"]


def test_a_failing_job_is_reported_and_the_line_goes_on():
    queue, started = make_queue(slots=1), []

    def broken(job):
        raise RuntimeError("out of cheese")

    failed = queue.submit(broken, kind="train", label="broken", owner="a", memory_mb=10)
    gate = Gate(started)
    gate.opened.set()
    after = queue.submit(gate, kind="train", label="after", owner="a", memory_mb=10)
    assert failed.wait(WAIT) and failed.state == "failed"
    assert "out of cheese" in failed.error
    assert after.wait(WAIT) and after.state == "done"


def test_work_that_raises_job_cancelled_ends_as_cancelled():
    queue = make_queue()

    def gives_up(job):
        raise JobCancelled("stopped")

    job = queue.submit(gives_up, kind="train", label="x", owner="a", memory_mb=1)
    assert job.wait(WAIT) and job.state == "cancelled"


def test_the_wait_is_estimated_from_the_jobs_ahead():
    now = {"t": 0.0}
    queue = JobQueue(slots=1, memory_limit_mb=1000, memory_in_use_mb=lambda: 0.0, safety=1.0, clock=lambda: now["t"])
    started: list[str] = []
    gates = [Gate(started) for _ in range(3)]
    jobs = [
        queue.submit(g, kind="train", label=f"j{i}", owner="a", memory_mb=1, estimate_s=s)
        for i, (g, s) in enumerate(zip(gates, (60.0, 30.0, 10.0), strict=True))
    ]
    until(lambda: started == ["j0"])
    now["t"] = 20.0  # j0 has 40 s left
    assert queue.wait_estimate_s(jobs[1]) == pytest.approx(40.0)
    assert queue.wait_estimate_s(jobs[2]) == pytest.approx(70.0)
    assert queue.wait_estimate_s(jobs[0]) == 0.0
    for gate in gates:
        gate.opened.set()
    assert jobs[2].wait(WAIT)


def test_without_an_estimate_the_wait_comes_from_what_jobs_of_that_kind_took():
    now = {"t": 0.0}
    queue = JobQueue(slots=1, memory_limit_mb=1000, memory_in_use_mb=lambda: 0.0, safety=1.0, clock=lambda: now["t"])
    started: list[str] = []
    first = Gate(started)
    job = queue.submit(first, kind="embed", label="first", owner="a", memory_mb=1)
    until(lambda: started == ["first"])
    waiting = queue.submit(Gate(started), kind="embed", label="second", owner="b", memory_mb=1)
    assert queue.typical_s("embed") is None
    assert queue.wait_estimate_s(waiting) is None  # nothing of its kind has finished here yet
    now["t"] = 30.0
    first.opened.set()
    assert job.wait(WAIT)
    assert queue.typical_s("embed") == pytest.approx(30.0)

    gates = [Gate(started), Gate(started)]
    third = queue.submit(gates[0], kind="embed", label="third", owner="c", memory_mb=1)
    behind = queue.submit(gates[1], kind="embed", label="fourth", owner="d", memory_mb=1)
    queue.cancel(waiting)
    until(lambda: started[-1] == "third")
    now["t"] = 40.0  # "third" started at 30: about 20 s left of a typical 30
    assert queue.wait_estimate_s(behind) == pytest.approx(20.0)
    now["t"] = 50.0
    gates[0].opened.set()
    assert third.wait(WAIT)
    assert queue.typical_s("embed") == pytest.approx(0.5 * 20.0 + 0.5 * 30.0)  # recent jobs count most
    assert queue.typical_s("train") is None
    gates[1].opened.set()
    assert behind.wait(WAIT)


def test_progress_is_readable_while_the_job_runs():
    queue, seen = make_queue(), threading.Event()

    def work(job):
        job.progress(3, 10, "Epoch 3 of 10")
        seen.wait(WAIT)

    job = queue.submit(work, kind="train", label="x", owner="a", memory_mb=1)
    until(lambda: job.progress_done == 3)
    assert (job.progress_total, job.progress_message) == (10, "Epoch 3 of 10")
    seen.set()
    assert job.wait(WAIT)


# --- the memory limit -----------------------------------------------------------------------------


def test_cgroup_limits_parse(tmp_path):
    assert parse_memory_max("2147483648\n") == 2048.0
    assert parse_memory_max("max\n") is None
    assert parse_memory_max("9223372036854771712") is None  # cgroup v1's "no limit"
    assert parse_memory_max("junk") is None
    v2 = tmp_path / "memory.max"
    v2.write_text("max\n")
    v1 = tmp_path / "memory.limit_in_bytes"
    v1.write_text(str(2700 * 2**20))
    no_group = tmp_path / "cgroup"
    no_group.write_text("0::/\n")
    assert cgroup_memory_limit_mb(v2, v1, cgroup_file=no_group) == 2700.0
    v2.write_text(str(512 * 2**20))
    assert cgroup_memory_limit_mb(v2, v1, cgroup_file=no_group) == 512.0


def test_the_environment_sets_a_soft_limit():
    assert memory_limit_mb({"ZOOSCOPE_MEMORY_LIMIT_MB": "2000"}) == 2000.0
    fallback = memory_limit_mb({"ZOOSCOPE_MEMORY_LIMIT_MB": "lots"})
    assert fallback > 0 and fallback != 2000.0


# --- work that runs in the thread that asked (a page's script run) --------------------------------


def test_admitted_waits_its_turn_in_the_callers_thread_and_reports_its_place():
    queue, started = make_queue(slots=1), []
    gate = Gate(started)
    first = queue.submit(gate, kind="train", label="first", owner="a", memory_mb=10)
    until(lambda: started == ["first"])
    places: list[int] = []

    def on_wait(job):
        places.append(queue.place(job))
        if len(places) == 3:
            gate.opened.set()

    with queue.admitted(kind="train", label="mine", owner="b", memory_mb=10, on_wait=on_wait, poll_s=0.01) as job:
        assert job.state == "running" and first.finished
        assert threading.current_thread() is threading.main_thread()
    assert places[:3] == [1, 1, 1]
    assert job.state == "done" and queue.jobs() == []


def test_a_rerun_while_waiting_leaves_the_line():
    queue, started = make_queue(slots=1), []
    gate = Gate(started)
    queue.submit(gate, kind="train", label="first", owner="a", memory_mb=10)
    until(lambda: started == ["first"])

    class Rerun(Exception):
        pass

    def on_wait(job):
        raise Rerun  # Streamlit's StopException on a click, as the page sees it

    with pytest.raises(Rerun):
        with queue.admitted(kind="train", label="mine", owner="b", memory_mb=10, on_wait=on_wait):
            raise AssertionError("never admitted")
    assert [job.label for job in queue.jobs()] == ["first"]
    gate.opened.set()


def test_a_closed_session_waiting_in_its_own_thread_is_told_so():
    alive = {"a", "b"}
    queue = make_queue(slots=1, is_alive=lambda owner: owner in alive, janitor_every_s=0.02)
    started: list[str] = []
    gate = Gate(started)
    queue.submit(gate, kind="train", label="first", owner="a", memory_mb=10)
    until(lambda: started == ["first"])
    alive.discard("b")
    with pytest.raises(JobCancelled):
        with queue.admitted(kind="train", label="mine", owner="b", memory_mb=10, poll_s=0.01):
            raise AssertionError("never admitted")
    gate.opened.set()


def test_a_failure_inside_an_admitted_block_frees_the_slot():
    queue = make_queue(slots=1)
    with pytest.raises(RuntimeError):
        with queue.admitted(kind="train", label="mine", owner="a", memory_mb=10) as job:
            raise RuntimeError("boom")
    assert job.state == "failed"
    gate = Gate([])
    gate.opened.set()
    after = queue.submit(gate, kind="train", label="after", owner="a", memory_mb=10)
    assert after.wait(WAIT) and after.state == "done"


def test_work_nested_in_a_running_job_is_part_of_it_and_never_waits_for_its_own_slot():
    # A training whose first step is a first export of its backbone: on one slot, a second place in line
    # would wait for the slot its own thread holds, forever.
    queue = make_queue(slots=1)
    with queue.admitted(kind="train", label="training", owner="a", memory_mb=1) as outer:
        with queue.admitted(kind="export", label="export", owner="a", memory_mb=1) as inner:
            assert inner is outer
        assert [job.label for job in queue.jobs()] == ["training"]
    assert outer.state == "done" and queue.jobs() == []

    def nested(job: Job) -> str:
        with queue.admitted(kind="export", label="inner", owner="b", memory_mb=1) as inner:
            return "nested in its own job" if inner is job else "a second job"

    submitted = queue.submit(nested, kind="embed", label="outer", owner="b", memory_mb=1)
    assert submitted.wait(WAIT) and submitted.result == "nested in its own job"
    with queue.admitted(kind="export", label="after", owner="a", memory_mb=1) as later:
        assert later.label == "after"  # once the outer job is over, work waits in line again


def test_trainings_leave_one_slot_to_short_work():
    queue, started = make_queue(slots=2), []
    gates = {name: Gate(started) for name in ("train 1", "train 2", "embed", "train 3")}
    jobs = {
        name: queue.submit(gate, kind=name.split()[0], label=name, owner=name, memory_mb=1)
        for name, gate in gates.items()
    }
    until(lambda: started == ["train 1", "embed"])  # the second training waits for the long lane
    assert queue.place(jobs["train 2"]) == 1 and queue.place(jobs["train 3"]) == 2
    gates["train 1"].opened.set()
    until(lambda: started == ["train 1", "embed", "train 2"])  # trainings keep their order among themselves
    gates["embed"].opened.set()
    assert jobs["embed"].wait(WAIT)
    assert jobs["train 3"].state == "waiting"  # the free slot stays short work's
    for gate in gates.values():
        gate.opened.set()
    assert jobs["train 3"].wait(WAIT) and started[-1] == "train 3"


def test_memory_in_use_is_the_anonymous_resident_set(tmp_path):
    from core.jobs.limits import process_memory_mb

    status = tmp_path / "status"
    status.write_text("VmRSS:\t 2097152 kB\nRssAnon:\t 1048576 kB\nRssFile:\t 1048576 kB\n")
    assert process_memory_mb(status) == 1024.0  # file pages (libraries, mmap'd weights) the kernel can drop
    assert process_memory_mb(tmp_path / "missing") > 0  # elsewhere: the resident set
