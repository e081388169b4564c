"""Trainings give way to short work: they pause between steps while a short job or light work runs."""

from __future__ import annotations

import threading
import time

from core.jobs.queue import Job, give_way
from tests.unit.test_job_queue import WAIT, Gate, make_queue, until


class Training:
    """A long job's steps: each one gives way first, then counts."""

    def __init__(self):
        self.steps = 0
        self.stop = threading.Event()

    def __call__(self, job: Job) -> int:
        while not self.stop.is_set():
            give_way()
            job.check()
            self.steps += 1
            time.sleep(0.002)
        return self.steps


def stands_still(training: Training, seconds: float = 0.3) -> bool:
    before = training.steps
    time.sleep(seconds)
    return training.steps == before


def test_on_one_slot_short_work_starts_beside_a_training_which_pauses_for_it():
    queue, started = make_queue(slots=1), []
    training, embedding = Training(), Gate(started)
    train = queue.submit(training, kind="train", label="train", owner="a", memory_mb=1)
    until(lambda: training.steps > 3)
    embed = queue.submit(embedding, kind="embed", label="embed", owner="b", memory_mb=1)
    until(lambda: started == ["embed"])  # not behind the training: a paused training holds no core
    until(lambda: train.paused)
    assert stands_still(training) and train.state == "running"
    embedding.opened.set()
    assert embed.wait(WAIT)
    until(lambda: training.steps > 0 and not train.paused)
    assert not stands_still(training)  # it goes on where it paused
    training.stop.set()
    assert train.wait(WAIT) and train.state == "done"


def test_trainings_pause_for_light_work_which_never_waits():
    queue = make_queue(slots=1)
    training = Training()
    train = queue.submit(training, kind="train", label="train", owner="a", memory_mb=1)
    until(lambda: training.steps > 3)
    with queue.light():  # a visitor classifying a photo: at once, no place in line
        until(lambda: train.paused)
        assert stands_still(training)
    until(lambda: not train.paused)
    assert not stands_still(training)
    training.stop.set()
    assert train.wait(WAIT)


def test_a_stream_of_short_work_slows_a_training_but_never_stops_it():
    queue = make_queue(slots=1, max_pause_s=0.2, min_run_s=0.4)
    training = Training()
    train = queue.submit(training, kind="train", label="train", owner="a", memory_mb=1)
    until(lambda: training.steps > 3)
    with queue.light():  # light work that lasts far longer than a pause
        until(lambda: train.paused)
        paused_at = training.steps
        until(lambda: training.steps > paused_at + 5)  # after max_pause_s it runs again...
        until(lambda: train.paused)  # ...for min_run_s, then gives way again
    training.stop.set()
    assert train.wait(WAIT)


def test_a_cancelled_training_stops_pausing_and_ends():
    queue = make_queue(slots=1)
    training = Training()
    train = queue.submit(training, kind="train", label="train", owner="a", memory_mb=1)
    until(lambda: training.steps > 3)
    with queue.light():
        until(lambda: train.paused)
        queue.cancel(train)
        assert train.wait(WAIT) and train.state == "cancelled"


def test_short_jobs_and_work_outside_jobs_never_pause():
    queue = make_queue(slots=2)
    with queue.light():
        started = time.monotonic()
        give_way()  # no job in this thread
        short = queue.submit(lambda job: give_way() or "went on", kind="embed", label="embed", owner="a", memory_mb=1)
        assert short.wait(WAIT) and short.result == "went on"
        assert time.monotonic() - started < queue.max_pause_s


def test_a_training_still_needs_a_free_slot():
    # Short work may use every slot beside a paused training; a training never runs beyond the slots.
    queue, started = make_queue(slots=1), []
    gates = [Gate(started), Gate(started)]
    embed = queue.submit(gates[0], kind="embed", label="embed", owner="a", memory_mb=1)
    train = queue.submit(gates[1], kind="train", label="train", owner="b", memory_mb=1)
    until(lambda: started == ["embed"])
    assert queue.place(train) == 1
    gates[0].opened.set()
    until(lambda: started == ["embed", "train"])
    gates[1].opened.set()
    assert embed.wait(WAIT) and train.wait(WAIT)


def test_short_work_is_admitted_by_the_memory_of_short_work_alone_once_the_trainings_pause():
    # A training promised most of the memory; the short job fits only because the training pauses
    # (between micro-batches: no live activations) while it runs, and it starts only once it has.
    queue = make_queue(slots=1, limit=1000.0, in_use=100.0, max_pause_s=0.2)
    training = Training()
    train = queue.submit(training, kind="train", label="train", owner="a", memory_mb=800)
    until(lambda: training.steps > 3)
    seen_paused: list[bool] = []

    def explain(job: Job) -> str:
        seen_paused.append(train.paused)
        time.sleep(0.6)  # longer than max_pause_s: the training stays paused all the same
        seen_paused.append(train.paused)
        return "done"

    short = queue.submit(explain, kind="explain", label="explain", owner="b", memory_mb=500)
    assert short.wait(WAIT) and short.result == "done"
    assert seen_paused == [True, True]
    too_big = queue.submit(lambda job: None, kind="explain", label="too big", owner="b", memory_mb=950)
    time.sleep(0.2)
    assert too_big.state == "waiting"  # short work's own memory still has to fit
    training.stop.set()
    assert train.wait(WAIT) and too_big.wait(WAIT)


def test_a_training_whose_session_closed_ends_at_its_next_step():
    # Its page's loop never asks whether the job was cancelled: give_way() does, between its steps.
    queue = make_queue(slots=1)
    steps = []

    def training(job: Job) -> None:
        while True:
            give_way()
            steps.append(1)
            time.sleep(0.002)

    train = queue.submit(training, kind="train", label="train", owner="a", memory_mb=1)
    until(lambda: len(steps) > 3)
    queue.close_owner("a")
    assert train.wait(WAIT) and train.state == "cancelled"


def test_short_work_starts_past_trainings_waiting_for_the_one_slot():
    # One core: a training runs, two more wait for the slot; an embedding asked after them starts at once.
    queue, started = make_queue(slots=1), []
    trainings = [Training() for _ in range(3)]
    jobs = [
        queue.submit(t, kind="train", label=f"train {i}", owner=str(i), memory_mb=1) for i, t in enumerate(trainings)
    ]
    until(lambda: trainings[0].steps > 3)
    embedding = Gate(started)
    embed = queue.submit(embedding, kind="embed", label="embed", owner="e", memory_mb=1)
    until(lambda: started == ["embed"])
    assert [queue.place(job) for job in jobs[1:]] == [1, 2]  # the trainings keep their order
    embedding.opened.set()
    for training, job in zip(trainings, jobs, strict=True):
        until(lambda t=training: t.steps > 0)
        training.stop.set()
        assert job.wait(WAIT) and job.state == "done"
    assert embed.state == "done"


def test_a_long_job_runs_at_a_lower_os_priority():
    import os

    if not hasattr(os, "setpriority"):
        return
    # Relative to this thread's own priority: an earlier test that ran a training in it lowered it for good.
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    if base >= 19:
        return
    nice = base + 1
    queue = make_queue(slots=1, long_job_nice=nice)
    seen = {}

    def work(job: Job) -> None:
        seen[job.kind] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    for kind in ("train", "embed"):
        assert queue.submit(work, kind=kind, label=kind, owner="a", memory_mb=1).wait(WAIT)
    assert seen["train"] == nice and seen["embed"] == base  # its own thread only: short work keeps its priority


def test_trainings_do_not_pause_for_background_work_nobody_waits_on():
    # The fine-tune page's time estimates measure in the background: a training goes on beside them.
    queue, started = make_queue(slots=2), []
    measuring, training = Gate(started), Training()
    estimate = queue.submit(measuring, kind="estimate", label="estimate", owner="a", memory_mb=1)
    until(lambda: started == ["estimate"])
    train = queue.submit(training, kind="train", label="train", owner="b", memory_mb=1)
    until(lambda: training.steps > 3)
    assert not stands_still(training) and not train.paused
    training.stop.set()
    measuring.opened.set()
    assert train.wait(WAIT) and estimate.wait(WAIT)
