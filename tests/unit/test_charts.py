"""ui.charts: each builder's Vega-Lite spec (marks, fields, scales), on full, one-row and empty frames."""

from __future__ import annotations

import altair as alt
import pandas as pd
import pytest

from ui.charts import (
    CELL_SELECTION,
    POINT_SELECTION,
    accuracy_vs_gflops,
    accuracy_vs_latency,
    confusion_heatmap,
    embedding_map,
    image_data_url,
    top_k_bars,
    training_curves,
)

LATENCY_ROWS = [
    {"model": "resnet50", "family": "resnet", "acc1": 80.858, "latency_ms": 41.2, "params_m": 25.56},
    {"model": "efficientnet_lite0", "family": "efficientnet_lite", "acc1": 74.832, "latency_ms": 9.8, "params_m": 4.65},
    {"model": "vit_b_16", "family": "vit", "acc1": 81.072, "latency_ms": 120.5, "params_m": 86.57},
]
CURVE_ROWS = [
    {"epoch": epoch, "split": split, "metric": metric, "value": value}
    for epoch in (1, 2)
    for split, metric, value in (
        ("train", "loss", 0.9 / epoch),
        ("validation", "loss", 1.0 / epoch),
        ("train", "accuracy", 0.6 + 0.1 * epoch),
        ("validation", "accuracy", 0.5 + 0.1 * epoch),
    )
]
CONFUSION_ROWS = [
    {"true": true, "predicted": predicted, "count": count}
    for (true, predicted), count in {
        ("not_face", "not_face"): 18,
        ("not_face", "face"): 2,
        ("face", "not_face"): 1,
        ("face", "face"): 19,
    }.items()
]
GFLOPS_ROWS = [
    {"name": "resnet50", "family": "resnet", "acc1": 80.858, "gflops": 4.09, "params_m": 25.56},
    {"name": "squeezenet1_1", "family": "squeezenet", "acc1": 58.178, "gflops": 0.35, "params_m": 1.24},
    {"name": "vit_h_14", "family": "vit", "acc1": 88.552, "gflops": 1016.72, "params_m": 633.47},
]


def frames(rows: list[dict]) -> dict[str, pd.DataFrame]:
    full = pd.DataFrame(rows)
    return {"full": full, "one row": full.head(1), "empty": full.head(0), "no columns": pd.DataFrame()}


def values(spec: dict) -> list[dict]:
    (dataset,) = spec["datasets"].values()
    return dataset


def mark_type(layer: dict) -> str:
    mark = layer["mark"]
    return mark if isinstance(mark, str) else mark["type"]


@pytest.mark.parametrize("case", ["full", "one row", "empty", "no columns"])
def test_accuracy_vs_latency_is_labelled_scatter(case):
    frame = frames(LATENCY_ROWS)[case]
    chart = accuracy_vs_latency(frame)
    assert isinstance(chart, alt.LayerChart)
    spec = chart.to_dict()
    points, labels = spec["layer"]
    assert mark_type(points) in ("circle", "point")
    assert mark_type(labels) == "text"

    encoding = {**spec.get("encoding", {}), **points["encoding"]}  # shared x/y may sit on the layer or the parent
    assert encoding["x"]["field"] == "latency_ms"
    assert encoding["x"]["title"] == "measured latency, model alone, batch 1 (ms)"  # which latency it is
    assert encoding["y"]["field"] == "acc1" and encoding["y"]["title"] == "ImageNet top-1 (%)"
    assert encoding["y"]["scale"]["zero"] is False
    assert encoding["size"]["field"] == "params_m" and encoding["size"]["title"] == "parameters (M)"
    assert encoding["color"]["field"] == "family"
    assert {tip["field"] for tip in encoding["tooltip"]} == {"model", "family", "acc1", "latency_ms", "params_m"}
    assert labels["encoding"]["text"]["field"] == "model"
    assert labels["mark"]["baseline"] == "bottom"  # above its point, clear of the legends
    assert encoding["color"]["legend"]["orient"] == encoding["size"]["legend"]["orient"] == "bottom"
    assert len(values(spec)) == len(frame)


@pytest.mark.parametrize("case", ["full", "one row", "empty", "no columns"])
def test_accuracy_vs_gflops_is_interactive_log_scatter(case):
    frame = frames(GFLOPS_ROWS)[case]
    spec = accuracy_vs_gflops(frame).to_dict()
    assert mark_type(spec) in ("circle", "point")
    encoding = spec["encoding"]
    assert encoding["x"]["field"] == "gflops"
    assert encoding["x"]["scale"]["type"] == "log"
    assert encoding["x"]["title"] == "GFLOPS (log)"
    assert encoding["y"]["field"] == "acc1" and encoding["y"]["scale"]["zero"] is False
    assert encoding["size"]["field"] == "params_m"
    assert encoding["color"]["field"] == "family"
    assert {tip["field"] for tip in encoding["tooltip"]} == {"name", "family", "acc1", "gflops", "params_m"}
    # .interactive(): an interval selection bound to the scales (zoom and pan).
    assert any(param.get("bind") == "scales" for param in spec["params"])
    assert len(values(spec)) == len(frame)


def test_charts_carry_only_the_columns_they_draw():
    extra = pd.DataFrame(GFLOPS_ROWS).assign(weights="ResNet50_Weights.IMAGENET1K_V2", available=False)
    (row, *_) = values(accuracy_vs_gflops(extra).to_dict())
    assert set(row) == {"name", "family", "acc1", "gflops", "params_m"}


def test_top_k_bars_unchanged():
    frame = pd.DataFrame({"rank": [1, 2], "label": ["tabby", "tiger cat"], "probability": [0.7, 0.2]})
    spec = top_k_bars(frame).to_dict()
    assert mark_type(spec) == "bar"
    assert spec["encoding"]["x"]["field"] == "probability"
    assert spec["encoding"]["y"]["field"] == "label"


@pytest.mark.parametrize("case", ["full", "one row", "empty", "no columns"])
def test_training_curves_are_loss_and_accuracy_side_by_side(case):
    frame = frames(CURVE_ROWS)[case]
    chart = training_curves(frame)
    assert isinstance(chart, alt.HConcatChart)
    spec = chart.to_dict()
    loss, accuracy = spec["hconcat"]
    for panel, metric in ((loss, "loss"), (accuracy, "accuracy")):
        assert mark_type(panel) == "line"
        assert panel["transform"] == [{"filter": f"(datum.metric === '{metric}')"}]
        encoding = panel["encoding"]
        assert encoding["x"]["field"] == "epoch" and encoding["x"]["type"] == "quantitative"
        assert encoding["y"]["field"] == "value" and encoding["y"]["title"] == metric
        assert encoding["color"]["field"] == "split"
        assert encoding["color"]["scale"]["domain"] == ["train", "validation"]
    assert accuracy["encoding"]["y"]["scale"]["domain"] == [0, 1]
    assert accuracy["encoding"]["y"]["axis"]["format"] == "%"
    rows = values(spec)
    assert len(rows) == len(frame)
    if rows:
        assert set(rows[0]) == {"epoch", "split", "metric", "value"}


@pytest.mark.parametrize("case", ["full", "one row", "empty", "no columns"])
def test_confusion_heatmap_is_rects_with_counts(case):
    frame = frames(CONFUSION_ROWS)[case]
    chart = confusion_heatmap(frame)
    assert isinstance(chart, alt.LayerChart)
    spec = chart.to_dict()
    cells, counts = spec["layer"]
    assert mark_type(cells) == "rect" and mark_type(counts) == "text"
    assert cells["encoding"]["x"]["field"] == "predicted" and cells["encoding"]["y"]["field"] == "true"
    assert cells["encoding"]["color"]["field"] == "count"
    assert counts["encoding"]["text"]["field"] == "count"
    assert len(values(spec)) == len(frame)


def test_confusion_heatmap_keeps_the_class_order_on_both_axes():
    spec = confusion_heatmap(pd.DataFrame(CONFUSION_ROWS)).to_dict()
    cells = spec["layer"][0]["encoding"]
    assert cells["x"]["sort"] == cells["y"]["sort"] == ["not_face", "face"]  # the frame's order, not alphabetical
    assert spec["width"]["step"] == spec["height"]["step"]  # square cells


def test_a_selectable_heatmap_selects_one_cell_by_its_true_and_predicted_class():
    plain = confusion_heatmap(pd.DataFrame(CONFUSION_ROWS)).to_dict()
    assert "params" not in plain and "opacity" not in plain["layer"][0]["encoding"]

    spec = confusion_heatmap(pd.DataFrame(CONFUSION_ROWS), selectable=True).to_dict()
    (param,) = spec["params"]
    assert param["name"] == CELL_SELECTION
    assert param["select"] == {"type": "point", "fields": ["true", "predicted"], "on": "click", "clear": "dblclick"}
    cells = spec["layer"][0]
    assert param["views"] == [cells["name"]]  # the rects carry it, not the count labels
    assert cells["encoding"]["opacity"]["condition"]["param"] == CELL_SELECTION  # the others fade


MAP_ROWS = [
    {"index": i, "x": float(i), "y": float(-i), "file": f"{i}.jpg", "label": "ab"[i % 2], "image": image_data_url(b"x")}
    for i in range(4)
]


def test_embedding_map_points_with_thumbnails_in_the_tooltip():
    spec = embedding_map(pd.DataFrame(MAP_ROWS), colour="label").to_dict()
    assert spec["mark"]["type"] == "circle" and "params" not in spec
    encoding = spec["encoding"]
    assert encoding["color"]["field"] == "label" and encoding["x"]["axis"] is None
    assert [t["field"] for t in encoding["tooltip"]] == ["file", "label", "image"]  # Vega draws "image" as a picture
    assert MAP_ROWS[0]["image"] == "data:image/jpeg;base64,eA=="
    without = embedding_map(pd.DataFrame(MAP_ROWS).drop(columns="image"), colour="label").to_dict()
    assert [t["field"] for t in without["encoding"]["tooltip"]] == ["file", "label"]


def test_a_selectable_map_selects_one_point_by_its_index():
    spec = embedding_map(pd.DataFrame(MAP_ROWS), colour="label", selectable=True).to_dict()
    (param,) = spec["params"]
    assert param["name"] == POINT_SELECTION
    assert param["select"] == {"type": "point", "fields": ["index"], "on": "click", "clear": "dblclick"}
    assert spec["encoding"]["size"]["condition"]["param"] == POINT_SELECTION  # the clicked point grows


def test_coincident_points_are_set_apart_and_counted():
    """Three exact copies project to one spot: the chart draws three dots, and says three share the spot."""
    rows = [{"index": i, "x": 1.0, "y": 2.0, "file": f"copy{i}.jpg", "label": "a"} for i in range(3)]
    rows += [{"index": 3, "x": 0.0, "y": 0.0, "file": "alone.jpg", "label": "b"}]
    rows += [{"index": 4, "x": 5.0, "y": 5.0, "file": "far.jpg", "label": "b"}]
    spec = embedding_map(pd.DataFrame(rows), colour="label").to_dict()
    drawn = pd.DataFrame(next(iter(spec["datasets"].values()))).set_index("index")
    copies = drawn.loc[[0, 1, 2], ["x", "y"]].to_numpy()
    gaps = [((copies[i] - copies[j]) ** 2).sum() ** 0.5 for i, j in ((0, 1), (0, 2), (1, 2))]
    assert min(gaps) >= 0.02 * 5  # a dot's width apart on a map 5 units wide
    assert abs(copies.mean(axis=0) - [1.0, 2.0]).max() < 1e-9  # around their own spot
    assert drawn.loc[[3, 4], ["x", "y"]].to_numpy().tolist() == [[0.0, 0.0], [5.0, 5.0]]  # the others stay
    assert drawn["images here"].tolist() == [3, 3, 3, 1, 1]
    assert [t["field"] for t in spec["encoding"]["tooltip"]] == ["file", "label", "images here"]
