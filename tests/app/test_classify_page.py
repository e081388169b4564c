"""The Classify page through Streamlit's AppTest: real model, real photos, bad files."""

from pathlib import Path

import pandas as pd
from streamlit.testing.v1 import AppTest

from tests.app.conftest import TIMEOUT, shown

ROOT = Path(__file__).resolve().parents[2]
CHELSEA = (ROOT / "assets/examples/chelsea.jpg").read_bytes()
COFFEE = (ROOT / "assets/examples/coffee.jpg").read_bytes()
CAT_LABELS = {"tabby", "tiger cat", "Egyptian cat"}


def upload(app, *files):
    app.file_uploader(key="classify_files").set_value(list(files)).run()
    assert not app.exception, app.exception
    return app


def frames(app) -> list[pd.DataFrame]:
    return [element.value for element in app.dataframe]


def test_page_opens_with_offline_model_and_prompt(app):
    assert app.title[0].value == "Classify"
    assert app.selectbox(key="classify_model").value == "efficientnet_lite0"
    assert app.slider(key="classify_top_k").value == 5
    assert "Add one or more photos" in app.info[0].value
    assert not app.error


def test_real_photo_gets_expected_label_table_chart_and_latency(app):
    upload(app, ("chelsea.jpg", CHELSEA, "image/jpeg"))
    top_k = frames(app)[0]
    assert list(top_k.columns) == ["rank", "label", "probability"]
    assert len(top_k) == 5
    assert top_k["label"].iloc[0] in CAT_LABELS
    assert top_k["probability"].is_monotonic_decreasing
    chart_types = [element.type for element in app.get("arrow_vega_lite_chart") + app.get("vega_lite_chart")]
    assert chart_types, "expected the top-k bar chart"
    # The card's latency says what it times: preprocessing included, and the batch it shared.
    assert any(" ms per photo with preprocessing, on CPU: alone (batch 1)" in c.value for c in app.caption)
    assert not app.error


def test_top_k_slider_changes_rows(app):
    upload(app, ("coffee.jpg", COFFEE, "image/jpeg"))
    app.slider(key="classify_top_k").set_value(12).run()
    top_k = frames(app)[0]
    assert len(top_k) == 12
    assert top_k["label"].iloc[0] == "espresso"


def test_non_image_shows_error_and_no_exception(app):
    upload(app, ("notes.jpg", b"these are my notes, not a photo", "image/jpeg"))
    assert not app.exception
    assert len(app.error) == 1
    assert "notes.jpg" in shown(app.error[0].value)
    assert "not an image" in app.error[0].value
    assert not frames(app)


def test_batch_with_one_bad_file_reports_it_and_classifies_the_rest(app):
    upload(app, ("chelsea.jpg", CHELSEA, "image/jpeg"), ("broken.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "image/png"))
    assert len(app.error) == 1 and "broken.png" in shown(app.error[0].value)
    summary = frames(app)[0]
    assert list(summary["file"]) == ["chelsea.jpg", "broken.png"]
    assert summary["top1"].iloc[0] in CAT_LABELS
    assert summary["error"].iloc[1]
    assert app.get("download_button"), "the CSV download is offered"


def test_examples_button_classifies_bundled_photos(app):
    app.button(key="classify_examples_on").click().run()
    summary = frames(app)[0]
    by_file = dict(zip(summary["file"], summary["top1"], strict=False))
    assert by_file["coffee.jpg"] == "espresso"
    assert by_file["chelsea.jpg"] in CAT_LABELS


def sidebar_script():
    from ui.sidebar import render_sidebar

    render_sidebar()


def test_sidebar_shows_device_loaded_model_and_unloads(app):
    upload(app, ("coffee.jpg", COFFEE, "image/jpeg"))  # loads the model into the shared pool
    # AppTest re-runs only the page script after the first run, so the sidebar is checked on its own.
    sidebar = AppTest.from_function(sidebar_script, default_timeout=TIMEOUT).run()
    assert "`efficientnet_lite0` · ONNX Runtime" in [m.value for m in sidebar.sidebar.markdown]
    assert any("CPU" in c.value for c in sidebar.sidebar.caption)
    assert any(
        "Runtime: ONNX Runtime" in c.value and "ZOOSCOPE_RUNTIME=auto" in c.value for c in sidebar.sidebar.caption
    )
    assert sidebar.sidebar.metric[0].label == "Process memory"
    sidebar.sidebar.button(key="sidebar_unload").click().run()
    assert "none yet" in " ".join(m.value for m in sidebar.sidebar.markdown)


def test_unavailable_weights_say_which_file_and_the_bundled_model_answers(app, monkeypatch):
    monkeypatch.setenv("ZOOSCOPE_OFFLINE", "1")
    app.selectbox(key="classify_model").set_value("resnet18").run()
    upload(app, ("coffee.jpg", COFFEE, "image/jpeg"))
    assert not app.exception and not app.error
    [note] = [info.value for info in app.info if "cannot be downloaded" in info.value]
    assert "resnet18-f37072fd.pth" in note and "efficientnet_lite0" in note
    assert app.selectbox(key="classify_model").value == "efficientnet_lite0"
    assert frames(app)[0]["label"].iloc[0] == "espresso"


def test_sidebar_says_when_a_model_stays_on_pytorch_and_why(app, monkeypatch, tmp_path):
    from core.engines import verified
    from core.engines.onnx_export import ExportFailed

    def failing_export(*args, **kwargs):
        raise ExportFailed("torch.onnx could not export it (UnsupportedOperatorError: aten::made_up)")

    monkeypatch.setenv("ZOOSCOPE_CACHE_DIR", str(tmp_path / "cache"))  # the failure is remembered there only
    monkeypatch.setattr(verified, "export_module", failing_export)
    upload(app, ("coffee.jpg", COFFEE, "image/jpeg"))
    assert frames(app)[0]["label"].iloc[0] == "espresso"  # classified all the same, by PyTorch
    sidebar = AppTest.from_function(sidebar_script, default_timeout=TIMEOUT).run()
    assert "`efficientnet_lite0` · PyTorch" in [m.value for m in sidebar.sidebar.markdown]
    assert any("aten::made_up" in c.value for c in sidebar.sidebar.caption)


def test_int8_is_one_click_away_with_its_measured_agreement_and_speed(app):
    upload(app, ("coffee.jpg", COFFEE, "image/jpeg"))
    assert any("Runs in ONNX Runtime: its export gives PyTorch's top-1" in c.value for c in app.caption)
    app.toggle(key="classify_int8").set_value(True).run()
    assert not app.exception, app.exception
    assert frames(app)[0]["label"].iloc[0] == "espresso"
    said = [c.value for c in app.caption] + [w.value for w in app.warning]
    summary = next(text for text in said if "Runs in ONNX Runtime int8" in text)
    assert "check photos" in summary and "ms against" in summary and "MB against" in summary
    assert "model alone (one forward, batch 1, no preprocessing)" in summary  # not the cards' per-photo time
    # The verdict's headline names its reason, speed or agreement with fp32, whichever was measured here.
    slower, unfaithful = "slower than fp32 here" in summary, "same top-1 as fp32 on only" in summary
    headline = {
        (False, False): "Recommended, faster",
        (False, True): "Faster, but not recommended as its answers differ",
        (True, False): "Faithful, but not recommended as it is not faster",
        (True, True): "Not recommended, neither faster nor faithful",
    }[slower, unfaithful]
    assert headline in summary


def grey_png() -> bytes:
    """A flat grey picture: no class fits, so the model's top-1 is a fraction of a percent."""
    import io

    from PIL import Image

    data = io.BytesIO()
    Image.new("RGB", (224, 224), (128, 128, 128)).save(data, "PNG")
    return data.getvalue()


def test_a_weak_top1_is_greyed_under_its_floor_and_idle_columns_are_dropped(app):
    from ui.confidence import WEAK_LABEL

    upload(app, ("coffee.jpg", COFFEE, "image/jpeg"), ("grey.png", grey_png(), "image/png"))
    summary = frames(app)[0]
    # One batch: its latency share is one number for every photo, and no file failed: neither column is shown.
    assert list(summary.columns) == ["file", "top1", "confidence"]
    assert summary.set_index("file").loc["grey.png", "confidence"] < 0.2
    assert any(WEAK_LABEL in caption.value for caption in app.caption)  # the floor, shown
    answers = [m.value for m in app.markdown if " · " in m.value and "%" in m.value]
    (grey,) = [text for text in answers if f":gray-badge[{WEAK_LABEL}]" in text]
    assert grey.startswith(":gray[")  # muted, unlike the confident espresso
    assert any(text.startswith("**espresso**") for text in answers)
