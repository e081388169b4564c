"""The Compare page through AppTest, with the three bundled offline models and real photos."""

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.app.conftest import shown
from ui.navigation import COMPARE

ROOT = Path(__file__).resolve().parents[2]
CHELSEA = (ROOT / "assets/examples/chelsea.jpg").read_bytes()
COFFEE = (ROOT / "assets/examples/coffee.jpg").read_bytes()
LITE = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
CAT_LABELS = {"tabby", "tiger cat", "Egyptian cat"}


pytestmark = pytest.mark.usefixtures("offline")


@pytest.fixture
def compare(app):
    app.switch_page(COMPARE.file).run()
    assert not app.exception, app.exception
    return app


def upload(app, *files):
    app.file_uploader(key="compare_files").set_value(list(files)).run()
    assert not app.exception, app.exception
    return app


def chart_specs(app) -> list[dict]:
    charts = app.get("vega_lite_chart") + app.get("arrow_vega_lite_chart")
    return [json.loads(chart.proto.spec) for chart in charts]


def frame_with(app, column):
    return next(element.value for element in app.dataframe if column in element.value.columns)


def test_offline_defaults_to_the_bundled_trio(compare):
    assert compare.title[0].value == "Compare"
    assert compare.multiselect(key="compare_models").values == LITE
    assert "Add one or more photos" in compare.info[0].value


def test_three_models_table_agreement_and_tradeoff_chart(compare):
    upload(
        compare,
        ("coffee.jpg", COFFEE, "image/jpeg"),
        ("chelsea.jpg", CHELSEA, "image/jpeg"),
        ("empty.png", b"", "image/png"),
    )
    assert len(compare.error) == 1 and "empty.png" in shown(compare.error[0].value)

    models = frame_with(compare, "latency_ms")
    assert list(models["model"]) == LITE
    # Only what fits at 1280 px and carries something here: no agreement with fp32 for fp32 models.
    columns = ["model", "runtime", "latency_ms", "memory_mb", "size_mb", "acc1", "params_m", "gflops", "input_size"]
    assert list(models.columns) == columns
    assert (models["latency_ms"] > 0).all() and (models["memory_mb"] > 0).all()
    assert list(models["input_size"]) == [224, 240, 260]

    agreement = frame_with(compare, "consensus").set_index("file")
    assert bool(agreement.loc["coffee.jpg", "top1_agree"])
    assert agreement.loc["coffee.jpg", "consensus"] == "espresso"
    assert agreement.loc["chelsea.jpg", "consensus"] in CAT_LABELS

    encoded = next(text for text in map(json.dumps, chart_specs(compare)) if '"circle"' in text)
    for field in ('"acc1"', '"latency_ms"', '"params_m"', '"family"'):
        assert field in encoded


def test_explain_shows_one_heat_map_per_model_once_per_image_and_class(compare, monkeypatch):
    import core.classify.explain

    real, calls = core.classify.explain.grad_cam, []

    def counted(*args, **kwargs):
        calls.append(args[2] if len(args) > 2 else kwargs.get("class_index"))
        return real(*args, **kwargs)

    monkeypatch.setattr(core.classify.explain, "grad_cam", counted)
    upload(compare, ("coffee.jpg", COFFEE, "image/jpeg"))
    images_before = len(compare.get("image"))
    compare.toggle(key="compare_explain").set_value(True).run()
    assert not compare.exception, compare.exception
    assert len(compare.get("image")) == images_before + len(LITE)
    # The heat maps sit right under their toggle, before the photo's card (its thumbnail is the last image).
    # The heat maps sit right under their toggle, above the photos' cards (not after the last card).
    texts = [node.value for node in compare.main if node.type in ("caption", "markdown")]
    heat_maps = [i for i, text in enumerate(texts) if text.startswith(tuple(f"{name}: " for name in LITE))]
    assert len(heat_maps) == len(LITE) and max(heat_maps) < texts.index("#### coffee\\.jpg")
    assert any("espresso" in caption.value for caption in compare.caption)
    assert len(calls) == len(LITE)
    compare.slider(key="compare_top_k").set_value(3).run()  # another widget: the heat maps are kept
    assert len(calls) == len(LITE) and len(compare.get("image")) == images_before + len(LITE)
    compare.selectbox(key="compare_explain_class").set_value("espresso").run()  # another class: computed again
    assert not compare.exception, compare.exception
    assert len(calls) == 2 * len(LITE) and calls[-1] is not None


def test_a_model_that_needs_a_download_gives_its_place_to_a_bundled_one(compare):
    compare.multiselect(key="compare_models").set_value(["resnet18", "efficientnet_lite0"]).run()
    upload(compare, ("coffee.jpg", COFFEE, "image/jpeg"))
    assert compare.multiselect(key="compare_models").values == ["efficientnet_lite1", "efficientnet_lite0"]
    [note] = [info.value for info in compare.info if "cannot be downloaded" in info.value]
    assert "ZOOSCOPE_OFFLINE" in note and "resnet18" in note and "resnet18-f37072fd.pth" in note
    assert not compare.warning and not compare.error
    assert list(frame_with(compare, "latency_ms")["model"]) == ["efficientnet_lite1", "efficientnet_lite0"]


def test_memory_budget_unloads_least_recently_used_and_says_so(monkeypatch, app):
    monkeypatch.setenv("ZOOSCOPE_MEMORY_BUDGET_MB", "30")  # fits one lite model at a time
    from streamlit import cache_resource

    cache_resource.clear()
    app.switch_page(COMPARE.file).run()
    upload(app, ("coffee.jpg", COFFEE, "image/jpeg"))
    notes = " ".join(info.value for info in app.info)
    assert "Unloaded efficientnet_lite0" in notes
    assert list(frame_with(app, "latency_ms")["model"]) == LITE


def test_a_model_and_its_int8_variant_side_by_side(compare):
    int8 = "efficientnet_lite0 · int8"
    assert int8 in compare.multiselect(key="compare_models").options
    compare.multiselect(key="compare_models").set_value(["efficientnet_lite0", int8]).run()
    upload(compare, ("coffee.jpg", COFFEE, "image/jpeg"))
    models = frame_with(compare, "latency_ms").set_index("model")
    assert list(models["runtime"]) == ["onnx", "int8"]
    # Agreement with fp32 only where it is measured: blank on the fp32 row, not a trivial 100%.
    assert pd.isna(models.loc["efficientnet_lite0", "agreement"]) and 0 < models.loc[int8, "agreement"] <= 1
    assert models.loc[int8, "size_mb"] < models.loc["efficientnet_lite0", "size_mb"] / 3
    verdict = [m.value for m in compare.success] + [m.value for m in compare.warning]
    (said,) = [text for text in verdict if int8 in text]
    assert "recommended" in said.lower() and ("faster" in said.lower() or "faithful" in said.lower())
