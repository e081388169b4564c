"""Features' "Which layer fits your images" through AppTest: the example dataset probed on every stage of the
bundled EfficientNet-Lite0, the chart, the sentence with the best stage, the table, the session's result; and a
set that cannot be probed said in one line."""

import io
import json
import zipfile

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from tests.app.conftest import ok, shown
from ui.navigation import FEATURES
from ui.transfer import EXAMPLE, EXAMPLE_NAME, TRANSFER_RESULT

pytestmark = pytest.mark.usefixtures("offline")


@pytest.fixture
def page(app) -> AppTest:
    return ok(app.switch_page(FEATURES.file).run())


def test_the_example_dataset_probed_on_every_stage(page):
    assert not page.get("vega_lite_chart")  # nothing drawn before the button
    page.radio(key="transfer_source").set_value(EXAMPLE)
    ok(page.button(key="transfer_run").click().run())

    result = page.session_state[TRANSFER_RESULT]
    assert result["dataset"] == EXAMPLE_NAME
    probes = result["backbones"]["efficientnet_lite0"]
    stages = [stage["stage"] for stage in probes["stages"]]
    assert stages[-1] == "penultimate" and probes["best"] in stages

    (chart,) = page.get("vega_lite_chart")  # no photos for the sections above: the only chart is this one
    spec = json.dumps(json.loads(chart.proto.spec))
    assert "relative depth" in spec and "linear probe accuracy" in spec

    captions = [shown(caption.value) for caption in page.caption]
    (sentence,) = [caption for caption in captions if caption.startswith(f"On {EXAMPLE_NAME}")]
    assert "75 images in 3 classes" in sentence and probes["best"] in sentence
    table = page.dataframe[-1].value
    assert list(table["stage"]) == stages and list(table["best"]).count("best") == 1


def test_a_set_of_one_class_is_refused_in_one_line(page):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for number in range(3):
            image = io.BytesIO()
            Image.new("RGB", (64, 64), (60 * number, 80, 40)).save(image, "PNG")
            archive.writestr(f"cat/{number}.png", image.getvalue())
    page.file_uploader(key="transfer_zip").set_value([("cats.zip", buffer.getvalue(), "application/zip")]).run()
    ok(page.button(key="transfer_run").click().run())
    (error,) = page.error
    assert "at least 2 classes" in shown(error.value)
    assert TRANSFER_RESULT not in page.session_state
