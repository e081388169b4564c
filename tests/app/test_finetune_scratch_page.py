"""The Fine-tune page's from-scratch baseline through AppTest (rendered digits, the bundled EfficientNet-Lite0),
and the runs' curves it is drawn beside."""

from __future__ import annotations

import pytest
import torch.nn as nn
from streamlit.testing.v1 import AppTest

from core.finetune.config import EpochLog, TrainConfig
from core.finetune.trained import TrainedModel
from tests.app.conftest import ok
from tests.app.test_finetune_page import PAGE, TIMEOUT, frame_with, glyphs_zip, no_job_left, train_with, upload_zip
from ui.finetune.runs_chart import accuracy_over_time

__all__ = ["glyphs_zip", "no_job_left"]  # fixtures shared with the Fine-tune page's tests

pytestmark = pytest.mark.usefixtures("offline", "no_job_left")


@pytest.fixture
def page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.run()
    return ok(at)


def test_the_from_scratch_baseline_can_be_chosen_and_joins_the_runs(page, glyphs_zip):
    upload_zip(page, glyphs_zip, name="glyphs.zip")
    ok(page.radio(key="finetune_mode").set_value("scratch").run())
    assert page.number_input(key="finetune_epochs").value == 200  # the budget, not the epochs, ends it
    assert any("**random weights**" in c.value and "train in fine-tune mode first" in c.value for c in page.caption)
    assert page.number_input(key="finetune_scratch_seconds").value == 120  # no fine-tuned run to match yet
    page.number_input(key="finetune_scratch_seconds").set_value(1.0)
    page.selectbox(key="finetune_train_size").set_value(96)
    train_with(page, 2)
    scratch = page.session_state["my_model"]
    assert (scratch.config.mode, scratch.config.time_budget_s, scratch.depth) == ("scratch", 1.0, "all")
    assert 1 <= scratch.epochs_run <= 2 and scratch.tuned
    runs = frame_with(page, "kept epoch")
    assert runs[["run", "mode", "trained"]].to_dict("records") == [
        {"run": 1, "mode": "scratch", "trained": "whole network, from random weights"}
    ]
    assert any("from scratch (random weights" in c.value for c in page.caption)


def test_the_runs_curves_put_each_epoch_at_the_time_it_ended():

    def model(mode: str, seconds: float, epochs: list[tuple[float, float]]) -> TrainedModel:
        logs = [EpochLog(i, 1.0, 0.5, 1.0, acc, took) for i, (took, acc) in enumerate(epochs)]
        config = TrainConfig(mode=mode)
        return TrainedModel(
            "efficientnet_lite0", "w", ["a", "b"], config, nn.Linear(2, 2), history=logs, seconds=seconds, threshold=0.5
        )

    frame = accuracy_over_time(
        [
            ("Run 1: finetune", model("finetune", 10.0, [(2.0, 0.5), (3.0, 0.9)])),
            ("Run 2: scratch", model("scratch", 10.0, [(4.0, 0.4), (5.0, 0.6)])),
        ]
    )
    # The work before the first epoch (features, decoding) comes first: the last epoch ends at the total.
    assert frame.to_dict("records") == [
        {"run": "Run 1: finetune", "seconds": 7.0, "validation accuracy": 0.5},
        {"run": "Run 1: finetune", "seconds": 10.0, "validation accuracy": 0.9},
        {"run": "Run 2: scratch", "seconds": 5.0, "validation accuracy": 0.4},
        {"run": "Run 2: scratch", "seconds": 10.0, "validation accuracy": 0.6},
    ]
