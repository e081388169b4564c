"""The Fine-tune page's other modes through AppTest: fine-tune mode's measured time per depth, its training
beside a fast run in the runs table, and the learning-rate finder (on rendered digits, unlike photos)."""

from __future__ import annotations

import io
import json
import math
import zipfile

import pytest
from streamlit.testing.v1 import AppTest

from tests.app.conftest import ok
from tests.app.test_finetune_page import (
    TIMEOUT,
    chart_specs,
    downloads,
    frame_with,
    glyphs_zip,
    no_job_left,
    page,
    train_with,
    upload_zip,
)

__all__ = ["downloads", "glyphs_zip", "no_job_left", "page"]  # fixtures shared with the Fine-tune page's tests

pytestmark = pytest.mark.usefixtures("offline", "no_job_left")


def estimates_measured(at: AppTest) -> AppTest:
    """`at` run again once the queue's jobs (the time estimates' measuring) have finished."""
    from ui.jobs import job_queue

    for job in job_queue().jobs():
        assert job.wait(TIMEOUT), f"{job.label} did not finish"
    return ok(at.run())


def helps(at: AppTest, key: str) -> str:
    return next(widget.help for widget in at.checkbox if widget.key == key)


def test_finetune_mode_times_each_choice_trains_and_lists_the_runs(page, glyphs_zip, downloads):
    upload_zip(page, glyphs_zip, name="glyphs.zip")
    ok(page.radio(key="finetune_mode").set_value("finetune").run())
    depth = page.radio(key="finetune_unfreeze")
    assert depth.options == ["Head only", "Last block", "Last half", "Whole network"] and depth.value == "half"
    estimates_measured(page)  # in a background job of the queue: the page draws the table once it is done
    estimates = frame_with(page, "parameters that train")
    assert estimates["choice"].tolist() == depth.options
    assert all(time.startswith("about ") for time in estimates["time"])  # measured for every choice
    assert "mirrored 2 is not a 2" in helps(page, "finetune_flip")
    assert "ImageNet" in helps(page, "finetune_adapt_batchnorm")
    assert page.number_input(key="finetune_epochs").value == 8  # fine-tune mode's own default

    page.radio(key="finetune_unfreeze").set_value("last")
    page.selectbox(key="finetune_train_size").set_value(96)
    train_with(page, 2)
    trained = page.session_state["my_model"]
    assert (trained.config.mode, trained.config.depth, trained.config.train_size) == ("finetune", "last", 96)
    assert trained.epochs_run == 2 and trained.history[0].epoch == 0
    assert any("fine-tune mode (last block and the head trained)" in caption.value for caption in page.caption)
    runs = frame_with(page, "kept epoch")
    assert runs[["run", "mode", "trained", "epochs"]].to_dict("records") == [
        {"run": 1, "mode": "finetune", "trained": "last block and the head", "epochs": 2}
    ]

    # A fast run beside it; the first one can still be picked, tried and exported.
    ok(page.radio(key="finetune_mode").set_value("fast").run())
    train_with(page, 5)
    runs = frame_with(page, "kept epoch")
    assert runs["mode"].tolist() == ["finetune", "fast"] and runs["run"].tolist() == [1, 2]
    fast = page.session_state["my_model"]
    assert fast.config.mode == "fast" and page.selectbox(key="finetune_run_pick").value == 2
    ok(page.selectbox(key="finetune_run_pick").set_value(1).run())
    assert page.session_state["my_model"] is trained
    bundle = downloads["zooscope-efficientnet_lite0-3classes.zip"]
    manifest = json.loads(zipfile.ZipFile(io.BytesIO(bundle)).read("manifest.json"))
    assert manifest["training"]["mode"] == "finetune" and manifest["training"]["unfreeze"] == "last"


def test_the_learning_rate_finder_plots_and_suggests(page, glyphs_zip):
    upload_zip(page, glyphs_zip, name="glyphs.zip")
    ok(page.button(key="finetune_find_lr").click().run())
    assert any("learning rate (log)" in spec for spec in chart_specs(page))
    suggestion = next(caption.value for caption in page.caption if caption.value.startswith("Suggested: "))
    use = next(button for button in page.button if button.key == "finetune_use_lr")
    ok(use.click().run())
    chosen = page.select_slider(key="finetune_lr").value
    assert chosen == pytest.approx(float(use.label.removeprefix("Use ")))
    assert abs(math.log10(chosen) - math.log10(float(suggestion.split()[1].rstrip(",")))) <= 0.25
