"""The Models page through Streamlit's AppTest: the whole catalogue, its filters and its chart."""

import json
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.models.catalog import all_specs, get_spec
from core.models.weights import WEIGHTS_DIR_ENV
from tests.app.conftest import TIMEOUT
from ui.navigation import MODELS

PAGE = str(Path(__file__).resolve().parents[2] / MODELS.file)
COLUMNS = {
    "name",
    "family",
    "weights",
    "acc1",
    "acc5",
    "params_m",
    "gflops",
    "size_mb",
    "input_size",
    "available",
    "source",
}


@pytest.fixture
def models() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def table(app: AppTest) -> pd.DataFrame:
    return app.dataframe[0].value  # the catalogue (the weights versions table follows it)


def count_line(app: AppTest) -> str:
    (line,) = [caption.value for caption in app.caption if caption.value.startswith("Showing ")]
    return line


def charts(app: AppTest) -> list:
    return app.get("arrow_vega_lite_chart") + app.get("vega_lite_chart")


def bundled_names() -> set[str]:
    return {spec.name for spec in all_specs().values() if spec.source == "bundled"}


def test_table_lists_the_whole_catalogue(models):
    assert models.title[0].value == "Models"
    frame = table(models)
    assert set(frame.columns) == COLUMNS
    assert len(frame) == len(all_specs())
    assert set(frame["name"]) == set(all_specs())
    assert count_line(models) == f"Showing {len(all_specs())} of {len(all_specs())} models"
    # Numbers come from the weights' meta, unrounded, one row per spec.
    resnet50 = frame.set_index("name").loc["resnet50"]
    spec = get_spec("resnet50")
    assert resnet50["acc1"] == spec.acc1 and resnet50["gflops"] == spec.gflops
    assert resnet50["source"] == "torchvision"
    assert not models.info and not models.error


def test_family_filter_keeps_only_that_family(models):
    models.multiselect(key="models_family").set_value(["vgg"]).run()
    frame = table(models)
    assert set(frame["family"]) == {"vgg"}
    assert len(frame) == sum(spec.family == "vgg" for spec in all_specs().values())
    assert count_line(models) == f"Showing {len(frame)} of {len(all_specs())} models"


def test_text_filter_matches_names_case_insensitively(models):
    models.text_input(key="models_search").input("MobileNet").run()
    names = set(table(models)["name"])
    assert {"mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small"} <= names
    assert all("mobilenet" in name for name in names)


def test_text_filter_matches_weights_names(models):
    models.text_input(key="models_search").input("IMAGENET1K_SWAG").run()
    frame = table(models)
    assert not frame.empty
    assert frame["weights"].str.contains("IMAGENET1K_SWAG").all()


def test_offline_only_shows_the_bundled_models_on_a_clean_machine(models):
    models.checkbox(key="models_available").check().run()
    frame = table(models)
    assert "efficientnet_lite0" in set(frame["name"])
    assert set(frame["name"]) == bundled_names()
    assert frame["available"].all()


def test_a_weights_file_in_the_weights_folder_counts_as_offline(tmp_path, monkeypatch):
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(tmp_path))
    (tmp_path / get_spec("resnet18").file_name).write_bytes(b"")  # is_available only looks, never hashes
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT).run()
    at.checkbox(key="models_available").check().run()
    assert not at.exception, at.exception
    assert set(table(at)["name"]) == bundled_names() | {"resnet18"}


def test_filters_combine(models):
    models.multiselect(key="models_family").set_value(["efficientnet", "efficientnet_lite"]).run()
    models.checkbox(key="models_available").check().run()
    assert set(table(models)["name"]) == bundled_names()


def test_chart_plots_accuracy_against_log_gflops_of_the_shown_rows(models):
    (chart,) = charts(models)
    spec = json.loads(chart.proto.spec)
    assert spec["encoding"]["x"]["field"] == "gflops"
    assert spec["encoding"]["x"]["scale"]["type"] == "log"
    assert spec["encoding"]["y"]["field"] == "acc1"

    models.multiselect(key="models_family").set_value(["vgg"]).run()
    (chart,) = charts(models)
    assert "gflops" in chart.proto.spec and '"log"' in chart.proto.spec


def test_no_match_shows_info_and_no_table(models):
    models.text_input(key="models_search").input("no such model zzz").run()
    assert not models.exception
    assert len(models.info) == 1 and "No model matches" in models.info[0].value
    assert not models.dataframe
    assert not charts(models)
    # Clearing the search brings everything back.
    models.text_input(key="models_search").input("").run()
    assert len(table(models)) == len(all_specs())
    assert not models.info


def test_limits_answer_the_smallest_model_above_an_accuracy(models):
    frame = table(models)
    above = frame[frame["acc1"] >= 75]
    smallest = above.loc[above["size_mb"].idxmin(), "name"]
    models.number_input(key="models_min_acc1").set_value(75.0).run()
    shown = table(models)
    assert (shown["acc1"] >= 75).all() and set(shown["name"]) == set(above["name"])
    (answer,) = [m.value for m in models.markdown if m.value.startswith("Smallest of these")]
    assert f"**{smallest.replace('_', chr(92) + '_')}**" in answer
    models.number_input(key="models_max_size_mb").set_value(20.0).run()
    models.number_input(key="models_max_params_m").set_value(5.0).run()
    shown = table(models)
    assert not shown.empty and (shown["size_mb"] <= 20).all() and (shown["params_m"] <= 5).all()
    assert (shown["acc1"] >= 75).all()


def test_names_show_in_full_and_the_shown_columns_fit(models):
    element = models.dataframe[0]  # the catalogue
    config = json.loads(element.proto.columns)
    assert config["name"]["width"] >= 150  # "shufflenet_v2_x1_5" in full
    shown = [column for column in element.proto.column_order]
    assert "source" not in shown and "input_size" not in shown  # in the frame, out of the table's way
    assert sum(config[column].get("width", 0) for column in shown) <= 818  # the table's width at 1280 px
