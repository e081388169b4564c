"""Fine-tune through the job queue: the time estimates never hold the page up, training waits its turn with
its memory estimate, and Stop leaves the line. The bundled EfficientNet-Lite0 on rendered digits, offline."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from streamlit.runtime.scriptrunner_utils.exceptions import StopException
from streamlit.testing.v1 import AppTest

from core.jobs.queue import JobQueue
from tests.app.conftest import ok
from tests.faces import zip_of
from tests.glyphs import glyph_pngs
from ui.navigation import FINETUNE

ROOT = Path(__file__).resolve().parents[2]
PAGE = str(ROOT / FINETUNE.file)
TIMEOUT = 180

pytestmark = pytest.mark.usefixtures("offline")


@pytest.fixture(scope="module")
def glyphs_zip() -> bytes:
    return zip_of({f"digit_{label}": list(images) for label, images in glyph_pngs(6).items() if label in "012"})


@pytest.fixture
def fresh_costs(tmp_path, monkeypatch) -> Path:
    """A cache folder of this test's own: no cost is measured yet."""
    monkeypatch.setenv("ZOOSCOPE_CACHE_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def held_measuring(monkeypatch) -> threading.Event:
    """The measuring job waits for this event before it measures: the page's first runs see it unfinished."""
    import ui.finetune.costs as costs

    go = threading.Event()
    real = costs.measure_costs

    def waiting(*args, **kwargs):
        assert go.wait(TIMEOUT)
        return real(*args, **kwargs)

    monkeypatch.setattr(costs, "measure_costs", waiting)
    yield go
    go.set()
    for job in costs.job_queue().jobs():  # none left measuring in the background when the process ends
        costs.job_queue().cancel(job)
        assert job.wait(TIMEOUT), f"{job.label} did not stop"


@pytest.fixture
def admitted(monkeypatch) -> list[dict]:
    """kind and memory_mb of every job that waited in line in the page's own thread (ui.jobs.in_line)."""
    seen: list[dict] = []
    real = JobQueue.admitted

    def recording(self, **kwargs):
        seen.append(kwargs)
        return real(self, **kwargs)

    monkeypatch.setattr(JobQueue, "admitted", recording)
    return seen


def finetune_page(data: bytes) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    ok(at.run())
    ok(at.file_uploader(key="finetune_zip").set_value(("glyphs.zip", data, "application/zip")).run())
    ok(at.radio(key="finetune_mode").set_value("finetune").run())
    return at


def estimates_table(at: AppTest):
    return next((e.value for e in at.dataframe if "parameters that train" in e.value.columns), None)


def measuring_jobs():
    from ui.jobs import job_queue

    return [job for job in job_queue().jobs() if job.kind == "estimate"]


def test_the_train_button_is_there_before_the_estimates_and_the_table_comes_when_measured(
    glyphs_zip, fresh_costs, held_measuring
):
    at = finetune_page(glyphs_zip)
    assert "finetune_train" in [button.key for button in at.button]
    assert estimates_table(at) is None
    assert any(c.value.startswith("Measuring how long each choice takes…") for c in at.caption)
    ok(at.run())  # another run while it measures: the same one job, not a second
    assert len(measuring_jobs()) == 1

    other = finetune_page(glyphs_zip)  # another session asking for the same backbone and settings shares it
    assert len(measuring_jobs()) == 1 and estimates_table(other) is None

    held_measuring.set()
    (job,) = measuring_jobs()
    assert job.wait(TIMEOUT) and job.state == "done", job.error
    ok(at.run())
    table = estimates_table(at)
    assert table["choice"].tolist() == ["Head only", "Last block", "Last half", "Whole network"]
    assert all(time.startswith("about ") for time in table["time"])
    assert (fresh_costs / "finetune-costs.json").exists()  # kept for the next start of the server
    ok(other.run())
    assert estimates_table(other) is not None and not measuring_jobs()


def test_training_waits_its_turn_with_its_memory_estimate_even_while_the_estimates_are_measured(
    glyphs_zip, fresh_costs, held_measuring, admitted
):
    at = finetune_page(glyphs_zip)
    at.radio(key="finetune_unfreeze").set_value("last")
    at.number_input(key="finetune_epochs").set_value(2)
    ok(at.button(key="finetune_train").click().run())  # the measuring is held: the training waits for nothing
    trained = at.session_state["my_model"]
    assert (trained.config.depth, trained.epochs_run) == ("last", 2)
    (train,) = [job for job in admitted if job["kind"] == "train"]
    assert "efficientnet_lite0" in train["label"] and "last block" in train["label"]
    assert 300 < train["memory_mb"] < 2048
    assert train["estimate_s"] is None  # not measured yet: the line gets no time for it


def test_stop_while_waiting_in_line_leaves_the_line(glyphs_zip, monkeypatch):
    import ui.jobs

    queue = ui.jobs.job_queue()
    release = threading.Event()
    # Short work of other visitors in every slot: a training in line is then first, whatever the host's
    # slots (trainings keep one slot free for short work, so other trainings would not fill them all).
    others = [
        queue.submit(lambda job: release.wait(TIMEOUT), kind="embed", label="another visitor", owner="x", memory_mb=1)
        for _ in range(queue.slots)
    ]
    shown: list[str] = []
    real = ui.jobs.waiting_text

    def clicked_while_waiting(q, job):
        shown.append(real(q, job))
        if len(shown) == 2:
            raise StopException()  # what Streamlit raises at the next st.* call once Stop was clicked
        return shown[-1]

    monkeypatch.setattr(ui.jobs, "waiting_text", clicked_while_waiting)
    try:
        at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
        ok(at.run())
        ok(at.file_uploader(key="finetune_zip").set_value(("glyphs.zip", glyphs_zip, "application/zip")).run())
        ok(at.button(key="finetune_train").click().run())
        assert shown[0].startswith("Waiting for the server: first in line")
        assert [job.label for job in queue.jobs()] == ["another visitor"] * queue.slots  # ours left the line
        ok(at.button(key="finetune_stop").click().run())
        assert any("Left the line: nothing was trained." in info.value for info in at.info)
        assert "my_model" not in at.session_state
    finally:
        release.set()
        for job in others:
            job.wait(TIMEOUT)
