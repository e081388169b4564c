"""The Inside page through AppTest: anatomy with no weights, the graph at each depth, stage maps of
the offline model on a real photo (their tab first), side by side from the opened model with its stages
in order and the head apart, EfficientNet's compound scaling, and the links in."""

import json
from pathlib import Path

import pandas as pd
import pytest
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
from streamlit.testing.v1 import AppTest

from core.inside.anatomy import anatomy
from core.models.catalog import get_spec
from tests.app.conftest import ok, shown
from ui.navigation import COMPARE, INSIDE, MODELS

ROOT = Path(__file__).resolve().parents[2]
CHELSEA = (ROOT / "assets/examples/chelsea.jpg").read_bytes()
CATS = {"tabby", "tiger cat", "Egyptian cat"}


pytestmark = pytest.mark.usefixtures("offline")


@pytest.fixture
def inside(app) -> AppTest:
    return ok(app.switch_page(INSIDE.file).run())


def stages_table(app: AppTest):
    return next(element.value for element in app.dataframe if "receptive_field" in element.value.columns)


def dot(app: AppTest) -> str:
    (chart,) = app.get("graphviz_chart")
    return chart.proto.spec


def charts(app: AppTest) -> list[tuple[dict, pd.DataFrame]]:
    """Each chart's Vega-Lite spec and its data, every dataset's rows (Streamlit sends them apart, as Arrow)."""
    found = []
    for chart in app.get("vega_lite_chart") + app.get("arrow_vega_lite_chart"):
        frames = [convert_arrow_bytes_to_pandas_df(dataset.data.data) for dataset in chart.proto.datasets]
        found.append((json.loads(chart.proto.spec), pd.concat(frames, ignore_index=True)))
    return found


def tabs(app: AppTest) -> list[str]:
    return [tab.label for tab in app.tabs]


def side_by_side_table(app: AppTest, model: str) -> dict[str, str]:
    table = next(element.value for element in app.dataframe if model in element.value.columns)
    return dict(zip(table[""], table[model], strict=True))


def metric(app: AppTest, label: str) -> str:
    return next(item.value for item in app.metric if item.label == label)


def test_resnet50_by_default_with_no_weights_on_disk(inside):
    assert inside.title[0].value == "Inside"
    assert tabs(inside) == ["Stages", "Graph", "What each stage sees", "Side by side"]
    assert inside.selectbox(key="inside_model").value == "resnet50"
    assert "model" not in inside.query_params  # the default needs no address of its own
    assert metric(inside, "Parameters") == "25.56 M"
    assert metric(inside, "Skip connections") == "16" and metric(inside, "Depth") == "50"
    table = stages_table(inside)
    assert list(table["name"]) == ["maxpool", "layer1", "layer2", "layer3", "layer4", ""]
    assert list(table["stage"]) == ["1", "2", "3", "4", "5", "head"]
    assert table["params_m"].sum() * 1e6 == pytest.approx(get_spec("resnet50").num_params, rel=1e-9)
    assert list(table["receptive_field"][:5]) == ["11 px", "35 px", "91 px", "267 px", "427 px"]
    graph = dot(inside)
    assert graph.startswith("digraph resnet50") and "0: Bottleneck" in graph and "style=dashed" in graph
    assert not inside.error and not inside.warning


def test_graph_depths(inside):
    inside.segmented_control(key="inside_depth").set_value("stages").run()
    assert "2. layer1\\n3 Bottleneck" in ok(inside).get("graphviz_chart")[0].proto.spec
    inside.segmented_control(key="inside_depth").set_value("layers").run()
    graph = dot(ok(inside))
    assert "conv2: Conv2d 3x3" in graph and 'label="+"' in graph  # layer1's blocks, op by op
    stage = inside.selectbox(key="inside_graph_stage_resnet50")
    assert stage.value == 1
    stage.set_value(4).run()
    assert "layer4" in dot(ok(inside)) and "2048 x 7 x 7" in dot(inside)


def test_a_link_chooses_the_model_and_every_model_works_without_weights(app):
    app.query_params["model"] = "vit_h_14"
    ok(app.switch_page(INSIDE.file).run())
    assert app.selectbox(key="inside_model").value == "vit_h_14"
    assert metric(app, "Skip connections") == "64"
    assert len(stages_table(app)) == 6  # patch embedding, four groups of eight encoder layers, head
    app.selectbox(key="inside_model").set_value("densenet201").run()
    assert ok(app).query_params["model"] == "densenet201"
    assert metric(app, "Depth") == "201" and "… 45 more: denselayer3 to denselayer47" in dot(app)


def test_an_unknown_model_in_the_address_is_said_and_replaced(app):
    app.query_params["model"] = "resnet9000"
    ok(app.switch_page(INSIDE.file).run())
    assert "resnet9000" in shown(app.warning[0].value)
    assert app.selectbox(key="inside_model").value == "resnet50"


def test_stage_maps_need_weights_and_say_which_file(inside):
    inside.button(key="inside_examples_on").click().run()
    warning = shown(ok(inside).warning[0].value)
    assert get_spec("resnet50").file_name in warning and "needs no weights" in warning
    assert not inside.get("image")
    assert stages_table(inside) is not None  # the anatomy is still there


def test_stage_maps_of_the_offline_model_on_a_photo(inside):
    inside.selectbox(key="inside_model").set_value("efficientnet_lite0").run()
    inside.file_uploader(key="inside_files").set_value([("chelsea.jpg", CHELSEA, "image/jpeg")]).run()
    ok(inside)
    assert tabs(inside) == ["What each stage sees", "Stages", "Graph", "Side by side"]  # the photo's maps first
    assert inside.session_state["inside_tab"] == "What each stage sees"  # and open
    said = [shown(item.value) for item in inside.markdown if "sees" in item.value]
    assert said and any(cat in said[0] for cat in CATS)
    stages = anatomy("efficientnet_lite0").stages
    headers = [shown(item.value) for item in inside.markdown if " grid" in item.value]
    assert len(headers) == len(stages) and "1. bn1" in headers[0]
    images = inside.get("image")
    assert len(images) == 2 * len(stages)  # per stage: the mean map, the channel grid
    assert not inside.error and not inside.warning


def test_stage_maps_of_a_model_run_in_int8(inside, monkeypatch):
    """Where the pool runs a model in ONNX Runtime int8 (labelled "efficientnet_lite0 · int8", which the catalogue
    does not know), the maps come from its torch face. They never run its session: a real handle around the
    real model, with an int8 engine that has no session, stands in for the pool's (quantizing takes minutes)."""
    import ui.loading
    from core.engines.handle import ModelHandle
    from core.engines.onnx_engine import OnnxEngine
    from core.models.loading import load_model

    engine = OnnxEngine(runtime="int8", session=None, file_bytes=0)  # type: ignore[arg-type]
    int8 = ModelHandle(torch=load_model("efficientnet_lite0"), inference=engine)
    monkeypatch.setattr(ui.loading, "load_with_progress", lambda key, **_: int8)
    inside.selectbox(key="inside_model").set_value("efficientnet_lite0").run()
    inside.file_uploader(key="inside_files").set_value([("chelsea.jpg", CHELSEA, "image/jpeg")]).run()
    ok(inside)
    assert not inside.error and not inside.warning
    said = [shown(item.value) for item in inside.markdown if "sees" in item.value]
    assert said and any(cat in said[0] for cat in CATS)
    assert len(inside.get("image")) == 2 * len(anatomy("efficientnet_lite0").stages)


def test_a_bad_photo_is_reported(inside):
    inside.selectbox(key="inside_model").set_value("efficientnet_lite0").run()
    inside.file_uploader(key="inside_files").set_value([("empty.png", b"", "image/png")]).run()
    assert "empty.png" in shown(ok(inside).error[0].value)


def test_side_by_side_and_compound_scaling(inside):
    assert inside.multiselect(key="inside_side_resnet50").value == ["resnet50", "vgg16", "efficientnet_b0"]
    (spec, values) = next((spec, data) for spec, data in charts(inside) if "hconcat" in spec)
    stages, head = spec["hconcat"]
    # Stages in network order (efficientnet_b0 has nine), the head in a panel of its own on its own scale.
    assert stages["encoding"]["x"]["sort"] == [str(number) for number in range(1, 10)]
    assert head["encoding"]["x"]["sort"] == ["head"] and spec["resolve"]["scale"]["y"] == "independent"
    assert all(layer["encoding"]["color"]["legend"]["orient"] == "bottom" for layer in (stages, head))
    assert set(values["model"]) == {"resnet50", "vgg16", "efficientnet_b0"}
    vgg = values.loc[values["model"] == "vgg16", "params_m"].sum()
    assert vgg * 1e6 == pytest.approx(get_spec("vgg16").num_params)
    # The widest stage is the stage table's: resnet50's last stage, 2048 x 7 x 7.
    assert side_by_side_table(inside, "resnet50")["widest stage"] == "2048 channels (stage 5)"
    assert stages_table(inside).set_index("stage").loc["5", "output_shape"] == "2048 x 7 x 7"
    layer4 = values[(values["model"] == "resnet50") & (values["stage"] == "5")]
    assert list(layer4["output_shape"]) == ["2048 x 7 x 7"]  # the chart's tooltip says the same

    # Opening another model starts side by side from it; picks then stay while it stays open.
    inside.selectbox(key="inside_model").set_value("mobilenet_v3_small").run()
    picks = inside.multiselect(key="inside_side_mobilenet_v3_small")
    assert picks.value == ["mobilenet_v3_small", "resnet50", "vgg16"]
    picks.set_value(["mobilenet_v3_small", "efficientnet_b0"]).run()
    assert ok(inside).multiselect(key=picks.key).value == ["mobilenet_v3_small", "efficientnet_b0"]

    inside.toggle(key="inside_scaling").set_value(True).run()
    ((spec, rows),) = [(spec, data) for spec, data in charts(ok(inside)) if "facet" in spec]
    # Folded before the facet splits by dimension (folded inside it, every panel was one "undefined").
    assert spec["transform"] == [{"fold": ["depth", "width", "resolution"], "as": ["dimension", "value"]}]
    assert spec["spec"]["layer"][0]["encoding"]["color"]["legend"]["orient"] == "bottom"
    assert set(rows["model"]) == {f"efficientnet_b{i}" for i in range(8)} | {f"efficientnet_lite{i}" for i in range(3)}
    b7 = rows.set_index("model").loc["efficientnet_b7"]
    assert b7["resolution"] == 600 and b7["acc1"] == get_spec("efficientnet_b7").acc1


def test_models_and_compare_link_to_inside(app):
    ok(app.switch_page(MODELS.file).run())
    app.selectbox(key="models_inside").set_value("vgg16").run()
    links = [link.proto for link in ok(app).get("page_link")]
    assert any(link.label == "Look inside vgg16" and "inside" in link.page for link in links)

    ok(app.switch_page(COMPARE.file).run())
    app.file_uploader(key="compare_files").set_value([("chelsea.jpg", CHELSEA, "image/jpeg")]).run()
    labels = {link.proto.label for link in ok(app).get("page_link")}
    assert {
        f"Look inside {name}" for name in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
    } <= labels
