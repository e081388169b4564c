"""Fine-tune in a real browser: upload a zip, train, watch, stop, download the bundle, use it on Classify;
fine-tune mode on the example dataset. (The example dataset in one click, a confusion cell clicked and
"not sure" for a photo of something else are in tests/e2e/test_walk_browser.py.)"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest

from tests.e2e.conftest import captions_split_mid_word, settle
from tests.faces import lfw_pngs, zip_of

pytestmark = pytest.mark.e2e

PER_CLASS = 30


@pytest.fixture(scope="module")
def faces() -> dict[str, list[bytes]]:
    face, other = lfw_pngs()
    return {"face": list(face), "other": list(other)}


@pytest.fixture
def faces_zip(tmp_path, faces) -> Path:
    path = tmp_path / "faces.zip"
    path.write_bytes(zip_of({label: images[:PER_CLASS] for label, images in faces.items()}))
    return path


def keyed(page, key: str):
    """The element Streamlit drew for the widget with this key (it carries the class st-key-<key>)."""
    return page.locator(f".st-key-{key}")


def open_fine_tune(page) -> None:
    link = page.locator("[data-testid='stSidebarNav']").get_by_role("link", name="Fine-tune")
    if link.count() == 0:
        pytest.skip("the sidebar has no Fine-tune link yet: app.py does not register pages/finetune.py")
    link.click()
    page.get_by_role("heading", name="Fine-tune").first.wait_for()


def upload_zip(page, path: Path, heading: str = "60 images in 2 classes") -> None:
    keyed(page, "finetune_zip").locator("input[type='file']").set_input_files(str(path))
    page.get_by_text(heading).wait_for()
    settle(page)


def set_number(page, key: str, value: int) -> None:
    """Type `value` into a number input until the app holds it: a rerun still drawing the page from
    the click before can replace the field and drop what was typed."""
    field = keyed(page, key).locator("input")
    for _ in range(3):
        if not field.is_visible():  # a rerun may draw the settings' expander closed again
            page.get_by_text("Training settings").click()
            field.wait_for()
        field.fill(str(value))
        field.press("Enter")
        settle(page)
        if field.input_value() == str(value):
            return
    raise AssertionError(f"{key} stayed at {field.input_value()!r}, not {value}")


def open_settings(page) -> None:
    epochs = keyed(page, "finetune_epochs").locator("input")
    if not epochs.is_visible():
        page.get_by_text("Training settings").click()
    epochs.wait_for()


def test_train_download_and_use_on_classify(page, screenshot, faces_zip, faces, tmp_path):
    open_fine_tune(page)
    upload_zip(page, faces_zip)
    assert captions_split_mid_word(page) == []  # "other_000.png" under its preview, on one line
    open_settings(page)
    set_number(page, "finetune_epochs", 8)
    keyed(page, "finetune_train").locator("button").click()

    page.get_by_text("Confusion matrix").wait_for(timeout=180_000)
    page.get_by_text("Validation accuracy", exact=True).wait_for()
    # The curves and the confusion matrix: a heading can be drawn before its chart, so wait for it.
    page.locator("[data-testid='stVegaLiteChart']").nth(1).wait_for(timeout=60_000)
    accuracy = page.locator("[data-testid='stMetric']").filter(has_text="Validation accuracy")
    assert float(re.search(r"([\d.]+)%", accuracy.inner_text()).group(1)) >= 90.0

    with page.expect_download() as download_info:
        keyed(page, "finetune_download_bundle").locator("button").click()
    download = download_info.value
    assert download.suggested_filename == "zooscope-efficientnet_lite0-2classes.zip"
    bundle = tmp_path / download.suggested_filename
    download.save_as(bundle)
    with zipfile.ZipFile(bundle) as archive:
        assert sorted(archive.namelist()) == ["manifest.json", "weights.safetensors"]
        assert json.loads(archive.read("manifest.json"))["classes"] == ["face", "other"]
    screenshot("finetune")
    assert page.get_by_text("Traceback").count() == 0

    # The bundle, brought to the Classify page in a new session, classifies a face.
    page.locator("[data-testid='stSidebarNav']").get_by_role("link", name="Classify").click()
    page.get_by_role("heading", name="Classify").first.wait_for()
    settle(page)
    uploader = keyed(page, "classify_bundle").locator("input[type='file']")
    if uploader.count() == 0:
        pytest.skip("the Classify page has no bundle uploader (key 'classify_bundle') yet")
    expander = page.locator("[data-testid='stExpander']").filter(has=uploader)
    if expander.count() and not expander.first.locator("details").get_attribute("open") == "":
        expander.first.locator("summary").click()  # open it, so what it says is visible
    uploader.set_input_files(str(bundle))
    page.get_by_text(re.compile(r"Loaded my model")).wait_for()
    settle(page)
    probe = tmp_path / "probe-face.png"
    probe.write_bytes(faces["face"][60])
    keyed(page, "classify_files").locator("input[type='file']").set_input_files(str(probe))
    # The answer, or "not sure" with the best guess when below the model's threshold.
    answer = re.compile(r"^((face|other) · |Not sure: [a-z ]+ · best guess (face|other) at )")
    page.get_by_text(answer).first.wait_for()
    screenshot("classify-my-model")
    assert page.get_by_text("Traceback").count() == 0

    # Back on Fine-tune: the zip's images are still there, and the imported bundle is a run of its own.
    open_fine_tune(page)
    page.get_by_text("Using faces.zip: 60 images in 2 classes.").wait_for()
    picked = keyed(page, "finetune_run_pick").get_by_role("combobox")
    assert re.match(r"Run 2: imported: zooscope-efficientnet_lite0-2classes\.zip", picked.input_value())


def test_stop_keeps_the_best_model_so_far(page, screenshot, faces_zip):
    open_fine_tune(page)
    upload_zip(page, faces_zip)
    # Fine-tune mode: the last block trains too, so each epoch takes long enough to click Stop in between.
    keyed(page, "finetune_mode").get_by_text("Fine-tune:").click()
    settle(page)
    open_settings(page)
    set_number(page, "finetune_epochs", 30)
    set_number(page, "finetune_patience", 30)
    keyed(page, "finetune_train").locator("button").click()

    # Any early epoch: Streamlit replaces a queued update to the same element with the next one, so
    # a given epoch's line may never reach the browser; epochs 2-9 leave 21 or more to stop in.
    page.get_by_text(re.compile(r"Epoch [2-9] of 30: validation loss")).wait_for(timeout=180_000)
    keyed(page, "finetune_stop").get_by_role("button", name=re.compile("Stop")).click()
    stopped = page.get_by_text(re.compile(r"Stopped after epoch \d+: kept the best epoch so far"))
    stopped.wait_for()
    settle(page)
    epochs = int(re.search(r"after epoch (\d+)", stopped.inner_text()).group(1))
    assert 2 <= epochs < 30
    page.get_by_text(f"Stopped after epoch {epochs} of 30").wait_for()
    page.get_by_text("Confusion matrix").wait_for()
    assert keyed(page, "finetune_download_bundle").count() == 1
    assert keyed(page, "finetune_stop").count() == 0
    screenshot("finetune-stopped")
    assert page.get_by_text("Traceback").count() == 0


def test_finetune_mode_on_the_example_dataset_shows_times_then_trains_and_lists_the_run(page, screenshot):
    open_fine_tune(page)
    page.get_by_role("button", name="Try an example dataset").click()
    page.get_by_text("75 images in 3 classes").wait_for()
    settle(page)
    keyed(page, "finetune_mode").get_by_text("Fine-tune:").click()
    settle(page)
    # Every choice of how much trains, timed on this machine in the background: the section polls for it
    # (a fragment) while the Train button is there already.
    keyed(page, "finetune_train").wait_for()
    estimates = page.get_by_text("timed once on this machine")
    estimates.wait_for(timeout=180_000)
    keyed(page, "finetune_unfreeze").get_by_text("Last block").click()
    settle(page)
    open_settings(page)
    set_number(page, "finetune_epochs", 3)
    keyed(page, "finetune_train").locator("button").click()

    page.get_by_text(re.compile(r"training images per second through the last block")).first.wait_for(timeout=300_000)
    page.get_by_text("Confusion matrix").wait_for(timeout=300_000)
    page.get_by_text("Runs in this session").wait_for()
    page.get_by_text(re.compile(r"fine-tune mode \(last block and the head trained\)")).wait_for()
    accuracy = page.locator("[data-testid='stMetric']").filter(has_text="Validation accuracy")
    assert float(re.search(r"([\d.]+)%", accuracy.inner_text()).group(1)) >= 90.0
    keyed(page, "finetune_download_bundle").wait_for(timeout=60_000)  # drawn after the results above
    screenshot("finetune-mode")
    assert page.get_by_text("Traceback").count() == 0
