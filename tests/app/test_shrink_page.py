"""The Shrink page through Streamlit's AppTest: a catalogue model shrunk (pruned, recovered), the trade drawn
and tabled, one variant kept and its file verified in its runtime; a bad photo reported while the rest go
through; a fine-tuned model asked for when there is none."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.app.conftest import TIMEOUT, ok, shown
from ui.navigation import SHRINK

PAGE = str(Path(__file__).resolve().parents[2] / SHRINK.file)
EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"


@pytest.fixture
def shrink_page(offline) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    return ok(at.run())


def charts(at: AppTest) -> list:
    return at.get("arrow_vega_lite_chart") + at.get("vega_lite_chart")


def test_a_catalogue_model_pruned_measured_kept_and_shipped(shrink_page):
    at = shrink_page
    assert at.title[0].value == "Shrink"
    assert at.selectbox(key="shrink_model").value == "efficientnet_lite0"
    at.multiselect(key="shrink_ratios").set_value([0.5])
    at.number_input(key="shrink_epochs").set_value(0)  # recovery has its own tests
    at.toggle(key="shrink_int8").set_value(False)
    at.toggle(key="shrink_zeros").set_value(False)
    ok(at.run())
    ok(at.button(key="shrink_go").click().run())
    (frame,) = [element.value for element in at.dataframe]
    assert list(frame["variant"]) == ["fp32", "pruned 50%"]
    assert frame.loc[1, "× params"] <= 0.6 and frame.loc[0, "agreement"] >= 0.97
    assert len(charts(at)) == 1
    keep = at.selectbox(key="shrink_keep")
    assert keep.options == ["fp32", "pruned 50%"]
    keep.set_value("pruned 50%")
    at.multiselect(key="shrink_formats").set_value(["onnx"])
    ok(at.run())
    ok(at.button(key="shrink_ship").click().run())
    downloads = at.get("download_button")
    assert len(downloads) == 1 and "efficientnet-lite0-pruned-50" in downloads[0].proto.label
    assert any("same top-1 as pruned 50% measured here on" in caption.value for caption in at.caption)
    assert any("OrtSession" in code.value or "ORTSession" in code.value for code in at.code)


def test_a_photo_that_is_not_one_is_named_and_the_rest_go_through(shrink_page):
    at = shrink_page
    photo = (EXAMPLES / "coffee.jpg").read_bytes()
    at.file_uploader(key="shrink_holdout").set_value(
        [("coffee.jpg", photo, "image/jpeg"), ("notes.png", b"not an image at all", "image/png")]
    )
    ok(at.run())
    assert any("notes.png" in shown(warning.value) for warning in at.warning)
    assert any("judged on your 1 held-out photos" in caption.value for caption in at.caption)
    assert at.button(key="shrink_go") is not None


def test_my_model_without_one_says_where_to_make_it(shrink_page):
    ok(shrink_page.radio(key="shrink_kind").set_value("My fine-tuned model").run())
    assert any("Train a model on Fine-tune first" in info.value for info in shrink_page.info)
    assert not shrink_page.get("button") or all(button.key != "shrink_go" for button in shrink_page.button)
