"""Heavy work waits its turn in the job queue, in the page: the place in line, a Cancel button, Cancelled
and Start again (ui.jobs.in_line); and a page's heavy work (Features' embedding) really queues there."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.jobs.queue import Job
from tests.app.conftest import ok, shown
from ui.jobs import job_queue
from ui.navigation import FEATURES

EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"
WAIT = 60.0  # seconds before a helper gives up on the page


def waiting_script():
    # Runs inside AppTest (from_function: only its own body travels): a queue with someone else's job
    # running and ours waiting behind it, drawn as in_line draws it; after a Cancel click, in_line itself.
    import threading

    import streamlit as st

    from core.jobs.queue import JobCancelled, JobQueue
    from ui.jobs import draw_waiting, in_line

    if "cancelled_job_embed_Embedding 3 images" not in st.session_state and "cancel_clicked" not in st.session_state:
        queue = JobQueue(slots=1, memory_limit_mb=1000, memory_in_use_mb=lambda: 0.0)
        gate = threading.Event()
        queue.submit(
            lambda job: gate.wait(10), kind="explain", label="explain", owner="other", memory_mb=1, estimate_s=65
        )
        ours = queue.submit(lambda job: None, kind="embed", label="Embedding 3 images", owner="me", memory_mb=1)
        draw_waiting(st.empty(), st.empty(), queue, ours)
        st.session_state["job_id"] = ours.id
        gate.set()
        return
    st.session_state["cancel_clicked"] = True
    try:
        with in_line("embed", "Embedding 3 images", memory_mb=1):
            st.success("embedded")
    except JobCancelled:
        pass


def test_the_place_in_line_a_cancel_button_then_cancelled_and_start_again():
    at = ok(AppTest.from_function(waiting_script, default_timeout=30).run())
    assert [shown(info.value) for info in at.info] == [
        "Waiting for the server: first in line, about 1 min 05 s (1 job of other visitors running)."
    ]
    cancel = at.button(key=f"cancel_job_{at.session_state['job_id']}")
    assert cancel.label == "Cancel"

    ok(cancel.click().run())  # the click's rerun: this session's work does not queue again
    assert [info.value for info in at.info] == ["Cancelled: Embedding 3 images."]
    assert not at.success and not job_queue().jobs()

    ok(at.button(key="start_again_embed_Embedding 3 images").click().run())
    assert [success.value for success in at.success] == ["embedded"] and not at.info


@pytest.fixture
def features(offline) -> AppTest:
    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "app.py"), default_timeout=120)
    ok(at.run())
    return ok(at.switch_page(FEATURES.file).run())


def photos(*names: str) -> list[tuple[str, bytes, str]]:
    return [(name, (EXAMPLES / name).read_bytes(), "image/jpeg") for name in names]


def test_features_waits_in_line_behind_other_work_and_can_be_cancelled(features):
    # First one photo with the queue free: the model loads (and makes its first ONNX export) and embeds.
    ok(features.file_uploader(key="features_files").set_value(photos("chelsea.jpg")).run())
    queue = job_queue()  # the process's one queue, the page's too (st.cache_resource)
    assert not queue.jobs()
    gate = threading.Event()
    # Someone else's work that promises all the memory there is: nothing else fits beside it.
    other = queue.submit(
        lambda job: gate.wait(WAIT), kind="explain", label="Someone's Grad-CAM", owner="other",
        memory_mb=queue.memory_limit_mb,
    )  # fmt: skip
    ours: list[Job] = []

    def cancel_ours_once_it_waits():
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            waiting = [job for job in queue.jobs() if job.kind == "embed" and job.state == "waiting"]
            if waiting:
                time.sleep(1.0)  # the page draws its place in line at once and every half second after
                ours.append(waiting[0])
                queue.cancel(waiting[0])  # as a closed tab does (a click reruns the page instead)
                return
            time.sleep(0.01)

    helper = threading.Thread(target=cancel_ours_once_it_waits)
    helper.start()
    try:
        ok(features.file_uploader(key="features_files").set_value(photos("chelsea.jpg", "coffee.jpg")).run())
        helper.join(WAIT)
        assert ours and ours[0].state == "cancelled"
        assert queue.jobs() == [other]  # it left the line; the other work runs on
        assert [shown(info.value) for info in features.info] == [
            "Cancelled while 1st in line: Embedding 2 images with efficientnet_lite0."
        ]
        assert not features.get("vega_lite_chart")  # no map without embeddings
    finally:
        gate.set()
    assert other.wait(WAIT)

    ok(features.button(key="start_again_embed_Embedding 2 images with efficientnet_lite0").click().run())
    assert "2 images · 1,280 numbers each from efficientnet_lite0 · ONNX Runtime" in [
        shown(caption.value) for caption in features.caption
    ]
    assert not queue.jobs()
