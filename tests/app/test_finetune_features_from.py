"""Fine-tune's "Features from" (fast mode from a stage) and the probes' suggestion, in AppTest."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.app.conftest import ok
from ui.navigation import FINETUNE

PAGE = str(Path(__file__).resolve().parents[2] / FINETUNE.file)
TIMEOUT = 180

pytestmark = pytest.mark.usefixtures("offline", "no_job_left")


@pytest.fixture
def no_job_left():
    """The queue's background jobs (time estimates measuring) cancelled and finished after the test."""
    yield
    from ui.jobs import job_queue

    queue = job_queue()
    for job in queue.jobs():
        queue.cancel(job)
        assert job.wait(TIMEOUT), f"{job.label} did not stop"


def _probes(best: float, last: float) -> dict:
    stages = [
        {"stage": "blocks.2", "relative_depth": 0.3, "dim": 40, "accuracy": 0.5, "std": 0.05},
        {"stage": "blocks.5", "relative_depth": 0.7, "dim": 192, "accuracy": best, "std": 0.03},
        {"stage": "penultimate", "relative_depth": 1.0, "dim": 1280, "accuracy": last, "std": 0.04},
    ]
    return {"backbones": {"efficientnet_lite0": {"stages": stages, "best": "blocks.5"}}, "dataset": "digits"}


def test_fast_mode_offers_the_stages_and_the_probes_suggestion_picks_one():
    page = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    ok(page.run())
    ok(page.button(key="finetune_try_example").click().run())
    choice = page.selectbox(key="finetune_features_from")
    assert choice.value == "penultimate" and "blocks.5" in choice.options  # fast mode: the stage ends, last layer last
    assert not any("fits your images better" in info.value for info in page.info)

    page.session_state["transfer_result"] = _probes(0.91, 0.74)
    ok(page.run())
    (note,) = [info.value for info in page.info if "fits your images better" in info.value]
    assert note.startswith("blocks.5 fits your images better than the last layer: 0.91 against 0.74")
    ok(page.button(key="finetune_features_from_suggested").click().run())
    assert page.selectbox(key="finetune_features_from").value == "blocks.5"
    assert not any("fits your images better" in info.value for info in page.info)  # taken: said once

    ok(page.radio(key="finetune_mode").set_value("finetune").run())
    assert "finetune_features_from" not in [box.key for box in page.selectbox]  # fast mode only


def test_the_runs_table_says_which_stage_a_run_took_its_features_from():
    import torch

    from core.finetune.config import TrainConfig
    from core.finetune.trained import TrainedModel
    from ui.finetune.history import Run, runs_frame

    def model(config: TrainConfig) -> TrainedModel:
        return TrainedModel("efficientnet_lite0", "x", ["a", "b"], config, torch.nn.Linear(4, 2), threshold=0.5)

    runs = [Run(1, model(TrainConfig(features_from="blocks.5"))), Run(2, model(TrainConfig(mode="finetune")))]
    assert runs_frame(runs)["features from"].tolist() == ["blocks.5", "penultimate"]
