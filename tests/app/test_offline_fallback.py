"""No network and no ZOOSCOPE_OFFLINE, as on a laptop off-line: the first failed download teaches the
process, Compare and Classify run the bundled models in place of the chosen ones with one note, and
"Try the network again" goes back to the choice.

urlopen fails as it does with no network (the name lookup fails); each test counts its calls.
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.models import weights
from core.models.catalog import get_spec
from tests.app.conftest import APP, TIMEOUT, ok, shown
from ui.navigation import COMPARE

ROOT = Path(__file__).resolve().parents[2]
CHELSEA = (ROOT / "assets/examples/chelsea.jpg").read_bytes()
COFFEE = (ROOT / "assets/examples/coffee.jpg").read_bytes()
LITE = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
WEB = ["resnet50", "vgg16", "efficientnet_b0"]
CAT_LABELS = {"tabby", "tiger cat", "Egyptian cat"}


@pytest.fixture
def no_network(monkeypatch) -> list[str]:
    """urlopen fails as with no network; the list of URLs it was asked for."""
    calls: list[str] = []

    def urlopen(url, timeout):
        calls.append(url)
        raise urllib.error.URLError(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return calls


def notes(app) -> list[str]:
    """The fallback notes, as read (Markdown code marks dropped)."""
    return [shown(info.value).replace("`", "") for info in app.info if "cannot be downloaded" in info.value]


def frame_with(app, column):
    return next(element.value for element in app.dataframe if column in element.value.columns)


# --- Compare ----------------------------------------------------------------------------------------


@pytest.fixture
def compare(app):
    return ok(app.switch_page(COMPARE.file).run())


def upload_compare(app, *files):
    return ok(app.file_uploader(key="compare_files").set_value(list(files)).run())


def test_compare_with_network_keeps_the_web_defaults(compare, no_network):
    assert compare.multiselect(key="compare_models").values == WEB
    assert not notes(compare) and no_network == []  # nothing is downloaded before there is a photo


def test_compare_falls_back_to_the_bundled_models_after_one_failed_download(compare, no_network):
    upload_compare(compare, ("coffee.jpg", COFFEE, "image/jpeg"))

    assert len(no_network) == 1, "each chosen model tried the network"
    assert compare.multiselect(key="compare_models").values == LITE
    [note] = notes(compare)
    assert note.startswith("There is no network here, so resnet50, vgg16 and efficientnet_b0 cannot be downloaded.")
    assert "Showing efficientnet_lite0, efficientnet_lite1 and efficientnet_lite2 in their place" in note
    assert not compare.error and not compare.warning  # no wall of download errors
    assert list(frame_with(compare, "latency_ms")["model"]) == LITE
    assert frame_with(compare, "consensus").loc[0, "consensus"] == "espresso"
    assert compare.button(key="compare_models_retry").label == "Try the network again"

    compare.slider(key="compare_top_k").set_value(3).run()  # any later run: the same one note, no new attempt
    assert len(notes(ok(compare))) == 1 and len(no_network) == 1


def test_compare_try_the_network_again_restores_the_choice(compare, no_network):
    upload_compare(compare, ("coffee.jpg", COFFEE, "image/jpeg"))
    upload_compare(compare)  # photos removed: nothing will load after the click
    assert compare.multiselect(key="compare_models").values == LITE and notes(compare)

    ok(compare.button(key="compare_models_retry").click().run())
    assert compare.multiselect(key="compare_models").values == WEB
    assert not notes(compare)
    assert weights.network_down() is None


def test_compare_retry_with_still_no_network_tries_once_and_falls_back_again(compare, no_network):
    upload_compare(compare, ("coffee.jpg", COFFEE, "image/jpeg"))
    ok(compare.button(key="compare_models_retry").click().run())
    assert len(no_network) == 2  # one attempt per click, not one per model
    assert compare.multiselect(key="compare_models").values == LITE
    assert len(notes(compare)) == 1
    assert list(frame_with(compare, "latency_ms")["model"]) == LITE


def test_compare_opened_once_the_network_is_known_down_starts_with_what_runs(compare, no_network):
    upload_compare(compare, ("coffee.jpg", COFFEE, "image/jpeg"))  # learns that the network is down
    fresh = ok(AppTest.from_file(APP, default_timeout=TIMEOUT).run())  # another browser session
    ok(fresh.switch_page(COMPARE.file).run())
    assert fresh.multiselect(key="compare_models").values == LITE
    assert len(notes(fresh)) == 1 and len(no_network) == 1

    ok(fresh.button(key="compare_models_retry").click().run())
    assert fresh.multiselect(key="compare_models").values == WEB  # the page's defaults are back


def test_compare_choosing_a_model_that_needs_the_network_while_it_is_down(compare, no_network):
    upload_compare(compare, ("coffee.jpg", COFFEE, "image/jpeg"))
    compare.multiselect(key="compare_models").set_value(["efficientnet_lite0", "resnet18"]).run()
    assert len(no_network) == 1  # known down: no new attempt
    assert compare.multiselect(key="compare_models").values == ["efficientnet_lite0", "efficientnet_lite1"]
    [note] = notes(ok(compare))
    assert "resnet18" in note and "resnet18-f37072fd.pth" in note
    assert list(frame_with(compare, "latency_ms")["model"]) == ["efficientnet_lite0", "efficientnet_lite1"]


# --- Classify -----------------------------------------------------------------------------------------


def upload_classify(app, *files):
    return ok(app.file_uploader(key="classify_files").set_value(list(files)).run())


def test_classify_shows_the_bundled_models_answer_with_a_note(app, no_network):
    ok(app.selectbox(key="classify_model").set_value("resnet50").run())
    assert no_network == [] and not notes(app)
    upload_classify(app, ("chelsea.jpg", CHELSEA, "image/jpeg"))

    assert len(no_network) == 1
    assert app.selectbox(key="classify_model").value == "efficientnet_lite0"
    [note] = notes(app)
    assert note.startswith("There is no network here, so resnet50 cannot be downloaded.")
    assert "Showing efficientnet_lite0 in its place" in note
    assert not app.error
    assert app.dataframe[0].value["label"].iloc[0] in CAT_LABELS
    assert app.button(key="classify_model_retry").label == "Try the network again"


def test_classify_try_the_network_again_when_it_is_back(app, no_network, monkeypatch, tmp_path, write_torchvision_file):
    import torchvision

    ok(app.selectbox(key="classify_model").set_value("mobilenet_v3_small").run())
    upload_classify(app, ("chelsea.jpg", CHELSEA, "image/jpeg"))
    assert app.selectbox(key="classify_model").value == "efficientnet_lite0" and notes(app)

    # The network is back: the download server answers with the weights file (random weights, same layout).
    served = write_torchvision_file(
        "mobilenet_v3_small", torchvision.models.mobilenet_v3_small().state_dict(), tmp_path / "server"
    )
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: _open_file(served, timeout))
    ok(app.button(key="classify_model_retry").click().run())

    assert app.selectbox(key="classify_model").value == "mobilenet_v3_small"
    assert not notes(app) and not app.error
    assert len(app.dataframe[0].value) == 5  # mobilenet_v3_small's own top-5
    assert weights.find_local(get_spec("mobilenet_v3_small")) is not None  # downloaded into the hub cache


def _open_file(path: Path, timeout: float):
    return urllib.request.build_opener().open(path.as_uri(), timeout=timeout)  # not the patched urlopen


def test_classify_with_the_offline_setting_has_no_retry(app, monkeypatch, no_network):
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    ok(app.selectbox(key="classify_model").set_value("resnet50").run())
    assert app.selectbox(key="classify_model").value == "efficientnet_lite0"
    [note] = notes(app)
    assert note.startswith("ZOOSCOPE_OFFLINE is set, so resnet50 cannot be downloaded.")
    assert not [button for button in app.button if button.key == "classify_model_retry"]
    assert no_network == []
