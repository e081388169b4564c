"""Altair chart builders: pure functions from DataFrames to charts."""

from __future__ import annotations

import altair as alt
import pandas as pd

from ui.map_overlaps import SHARED, spread_overlapping


def top_k_bars(frame: pd.DataFrame) -> alt.Chart:
    """Horizontal bars of one image's top-k (columns: rank, label, probability), best on top."""
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("probability:Q", title="probability", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
            y=alt.Y("label:N", title=None, sort=alt.EncodingSortField(field="rank", order="ascending")),
            tooltip=[alt.Tooltip("label:N"), alt.Tooltip("probability:Q", format=".2%")],
        )
        .properties(height=alt.Step(22))
    )


def accuracy_vs_latency(frame: pd.DataFrame) -> alt.LayerChart:
    """The model-selection trade-off: measured latency against top-1, sized by parameters, labelled.

    Columns: model, family, acc1, latency_ms, params_m (one row per model).
    """
    data = frame.reindex(columns=["model", "family", "acc1", "latency_ms", "params_m"])
    # Labels sit above their point (the y scale leaves room for the top one) and the legends sit under
    # the plot: the label of the rightmost model never lands on a legend.
    base = alt.Chart(data).encode(
        x=alt.X("latency_ms:Q", title="measured latency, model alone, batch 1 (ms)"),
        y=alt.Y("acc1:Q", title="ImageNet top-1 (%)", scale=alt.Scale(zero=False, padding=20)),
    )
    points = base.mark_circle(opacity=0.8).encode(
        size=alt.Size("params_m:Q", title="parameters (M)", legend=alt.Legend(orient="bottom")),
        color=alt.Color("family:N", title="family", legend=alt.Legend(orient="bottom")),
        tooltip=[
            alt.Tooltip("model:N"),
            alt.Tooltip("family:N"),
            alt.Tooltip("acc1:Q", title="top-1 (%)", format=".1f"),
            alt.Tooltip("latency_ms:Q", title="latency (ms)", format=".1f"),
            alt.Tooltip("params_m:Q", title="parameters (M)", format=".1f"),
        ],
    )
    labels = base.mark_text(align="center", baseline="bottom", dy=-9).encode(text=alt.Text("model:N"))
    return alt.LayerChart(layer=[points, labels])  # alt.layer may return a FacetChart; these have no facets


def accuracy_vs_gflops(frame: pd.DataFrame) -> alt.Chart:
    """The whole catalogue: compute (log GFLOPS) against top-1, sized by parameters; zoom and pan.

    Columns: name, family, acc1, gflops, params_m (one row per model).
    """
    data = frame.reindex(columns=["name", "family", "acc1", "gflops", "params_m"])
    return (
        alt.Chart(data)
        .mark_circle(opacity=0.75)
        .encode(
            x=alt.X("gflops:Q", title="GFLOPS (log)", scale=alt.Scale(type="log")),
            y=alt.Y("acc1:Q", title="ImageNet top-1 (%)", scale=alt.Scale(zero=False)),
            color=alt.Color("family:N", title="family", scale=alt.Scale(scheme="tableau20")),
            size=alt.Size("params_m:Q", title="parameters (M)"),
            tooltip=[
                alt.Tooltip("name:N", title="model"),
                alt.Tooltip("family:N"),
                alt.Tooltip("acc1:Q", title="top-1 (%)", format=".1f"),
                alt.Tooltip("gflops:Q", title="GFLOPS", format=".2f"),
                alt.Tooltip("params_m:Q", title="parameters (M)", format=".1f"),
            ],
        )
        .interactive()
    )


TRAINING_METRICS = ("loss", "accuracy")


def training_curves(frame: pd.DataFrame) -> alt.HConcatChart:
    """Loss and accuracy per epoch, side by side, one line per split (train, validation).

    Columns: epoch, split ("train" / "validation"), metric ("loss" / "accuracy"), value (long form).
    """
    data = frame.reindex(columns=["epoch", "split", "metric", "value"])
    charts = []
    for metric in TRAINING_METRICS:
        accuracy = metric == "accuracy"
        y = alt.Y(
            "value:Q",
            title=metric,
            scale=alt.Scale(domain=[0, 1]) if accuracy else alt.Scale(zero=True),
            axis=alt.Axis(format="%") if accuracy else alt.Axis(),
        )
        charts.append(
            alt.Chart(data)
            .transform_filter(alt.datum.metric == metric)
            .mark_line(point=True)
            .encode(
                x=alt.X("epoch:Q", title="epoch", axis=alt.Axis(tickMinStep=1, format="d")),
                y=y,
                color=alt.Color(
                    "split:N",
                    title=None,
                    scale=alt.Scale(domain=["train", "validation"]),
                    legend=alt.Legend(orient="top"),
                ),
                tooltip=[
                    alt.Tooltip("epoch:Q"),
                    alt.Tooltip("split:N"),
                    alt.Tooltip("value:Q", title=metric, format=".1%" if accuracy else ".4f"),
                ],
            )
            .properties(width=320, height=220)
        )
    return alt.hconcat(*charts)


CELL_SELECTION = "cell"  # the confusion heat map's point selection: {"true": ..., "predicted": ...} when clicked


def confusion_heatmap(frame: pd.DataFrame, *, selectable: bool = False) -> alt.LayerChart:
    """Confusion matrix as a heat map with the count in each cell: true class down, predicted across.

    Columns: true, predicted, count (long form, every pair; classes keep the frame's order).
    `selectable` adds a click-to-select point selection named CELL_SELECTION over (true, predicted);
    the other cells fade while one is selected.
    """
    data = frame.reindex(columns=["true", "predicted", "count"])
    classes = list(dict.fromkeys([*data["true"], *data["predicted"]]))
    step = max(18, min(60, 480 // max(len(classes), 1)))
    base = alt.Chart(data).encode(
        x=alt.X("predicted:N", title="predicted", sort=classes, axis=alt.Axis(labelAngle=-45, orient="top")),
        y=alt.Y("true:N", title="true", sort=classes),
    )
    cells = base.mark_rect().encode(
        color=alt.Color("count:Q", title="images", scale=alt.Scale(scheme="blues")),
        tooltip=[alt.Tooltip("true:N"), alt.Tooltip("predicted:N"), alt.Tooltip("count:Q", title="images")],
    )
    if selectable:
        cell = alt.selection_point(name=CELL_SELECTION, fields=["true", "predicted"], on="click", clear="dblclick")
        cells = (
            cells.mark_rect(cursor="pointer")
            .add_params(cell)
            .encode(opacity=alt.condition(cell, alt.value(1.0), alt.value(0.35)))
        )
    counts = (
        base.transform_joinaggregate(max_count="max(count)")
        .mark_text(baseline="middle")
        .encode(
            text=alt.Text("count:Q"),
            color=alt.condition("datum.count > datum.max_count / 2", alt.value("white"), alt.value("black")),
        )
    )
    return alt.LayerChart(layer=[cells, counts]).properties(width=alt.Step(step), height=alt.Step(step))


def lr_finder(frame: pd.DataFrame, suggestion: float) -> alt.LayerChart:
    """The learning-rate finder's curve: smoothed loss against learning rate (log scale), the
    suggested rate marked. Columns: lr, loss (one row per step)."""
    data = frame.reindex(columns=["lr", "loss"])
    x = alt.X("lr:Q", title="learning rate (log)", scale=alt.Scale(type="log"), axis=alt.Axis(format=".0e"))
    curve = (
        alt.Chart(data)
        .mark_line()
        .encode(
            x=x,
            y=alt.Y("loss:Q", title="loss (smoothed)", scale=alt.Scale(zero=False)),
            tooltip=[alt.Tooltip("lr:Q", title="learning rate", format=".1e"), alt.Tooltip("loss:Q", format=".3f")],
        )
    )
    marker = (
        alt.Chart(pd.DataFrame({"lr": [suggestion], "label": [f"suggested {suggestion:.1e}"]}))
        .mark_rule(color="#dc2626", strokeDash=[4, 3])
        .encode(x=x, tooltip=[alt.Tooltip("label:N", title="")])
    )
    return alt.LayerChart(layer=[curve, marker]).properties(width=420, height=220)


# Inside's charts (parameters per stage, compound scaling) live in ui/inside_charts.py.


POINT_SELECTION = "point"  # the embedding map's click selection: [{"index": row}] when a point is clicked


def image_data_url(jpeg: bytes) -> str:
    """A small JPEG as a `data:` address, which a Vega tooltip draws as a picture (field "image")."""
    import base64

    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def embedding_map(frame: pd.DataFrame, *, colour: str, selectable: bool = False) -> alt.Chart:
    """Images as points on a 2-D map of their embeddings, coloured by the column `colour` (a class, a cluster).

    Columns: index, x, y, file, `colour`, and optionally image (a data: address, drawn in the tooltip: Vega's
    tooltip shows a field named "image" as a picture). The axes carry no unit, so none is drawn.
    `selectable` adds a click selection named POINT_SELECTION over `index`; the clicked point grows.
    Points at the same spot (exact copies) are set on a small ring around it (ui.map_overlaps): three
    copies show as three dots, and the tooltip says how many share the spot.
    """
    columns = ["index", "x", "y", "file", colour, *(["image"] if "image" in frame.columns else [])]
    data = spread_overlapping(frame.reindex(columns=columns))
    tooltip = [alt.Tooltip("file:N"), alt.Tooltip(f"{colour}:N")]
    if (data[SHARED] > 1).any():
        tooltip.append(alt.Tooltip(f"{SHARED}:Q"))
    else:
        data = data.drop(columns=SHARED)
    if "image" in data.columns:
        tooltip.append(alt.Tooltip("image:N"))
    chart = (
        alt.Chart(data)
        .mark_circle(opacity=0.85, size=90)
        .encode(
            x=alt.X("x:Q", axis=None, scale=alt.Scale(zero=False)),
            y=alt.Y("y:Q", axis=None, scale=alt.Scale(zero=False)),
            color=alt.Color(f"{colour}:N", title=colour, scale=alt.Scale(scheme="tableau20")),
            tooltip=tooltip,
        )
    )
    if selectable:
        point = alt.selection_point(name=POINT_SELECTION, fields=["index"], on="click", clear="dblclick")
        chart = (
            chart.mark_circle(opacity=0.85, cursor="pointer")
            .add_params(point)
            .encode(size=alt.condition(point, alt.value(320), alt.value(90)))
        )
    return chart.properties(height=460)


def choice_map(frame: pd.DataFrame, *, max_latency_ms: float | None = None, min_accuracy: float | None = None):
    """Choose's map: every (model, runtime) a point, top-1 against latency (log), the file size as the
    area, the family as the colour, the runtime as the shape; hollow where the latency is predicted,
    faint outside the budget; the Pareto frontier as a line; the budgets as dashed rules. Zoom and pan.

    Columns: model, family, runtime, latency_ms, accuracy, size_mb, measured, on_frontier, fits.
    """
    data = frame.reindex(
        columns=["model", "family", "runtime", "latency_ms", "accuracy", "size_mb", "measured", "on_frontier", "fits"]
    ).assign(how=lambda f: f["measured"].map({True: "measured", False: "predicted"}))
    x = alt.X("latency_ms:Q", title="latency, batch 1 (ms, log)", scale=alt.Scale(type="log"))
    y = alt.Y("accuracy:Q", title="ImageNet top-1 (%)", scale=alt.Scale(zero=False))
    encoding = {
        "x": x,
        "y": y,
        "size": alt.Size("size_mb:Q", title="file size (MB)", scale=alt.Scale(range=[20, 900])),
        "color": alt.Color("family:N", title="family", scale=alt.Scale(scheme="tableau20")),
        "shape": alt.Shape("runtime:N", title="runtime"),
        "opacity": alt.condition("datum.fits", alt.value(1.0), alt.value(0.25)),
        "tooltip": [
            alt.Tooltip("model:N"),
            alt.Tooltip("runtime:N"),
            alt.Tooltip("accuracy:Q", title="top-1 (%)", format=".1f"),
            alt.Tooltip("latency_ms:Q", title="latency (ms)", format=".1f"),
            alt.Tooltip("how:N", title="latency is"),
            alt.Tooltip("size_mb:Q", title="file (MB)", format=".1f"),
        ],
    }
    # Measured points filled, predicted ones hollow: two layers of one encoding (one legend).
    measured = alt.Chart(data[data["measured"]]).mark_point(filled=True).encode(**encoding)
    predicted = alt.Chart(data[~data["measured"]]).mark_point(filled=False, strokeWidth=1.5).encode(**encoding)
    frontier = data[data["on_frontier"]].sort_values("latency_ms")
    line = alt.Chart(frontier).mark_line(color="#333333", strokeWidth=1.5, interpolate="step-after").encode(x=x, y=y)
    layers: list[alt.Chart] = [measured.interactive(), predicted, line]
    if max_latency_ms:
        rule = pd.DataFrame({"latency_ms": [max_latency_ms]})
        layers.append(alt.Chart(rule).mark_rule(strokeDash=[6, 4], color="#c0392b").encode(x="latency_ms:Q"))
    if min_accuracy:
        rule = pd.DataFrame({"accuracy": [min_accuracy]})
        layers.append(alt.Chart(rule).mark_rule(strokeDash=[6, 4], color="#c0392b").encode(y="accuracy:Q"))
    return alt.LayerChart(layer=layers)


def shrink_map(frame: pd.DataFrame, fidelity: str) -> alt.LayerChart:
    """Shrink's trade: each variant a point, fidelity against latency (all threads), the file's size as the
    area, the kind of variant as the colour, its name beside it.

    Columns: variant, kind, `fidelity` ("accuracy" or "agreement"), "latency all threads (ms)", "size (MB)",
    "params (M)", "latency 1 thread (ms)".
    """
    data = frame.rename(
        columns={"latency all threads (ms)": "latency_ms", "size (MB)": "size_mb", fidelity: "fidelity"}
    )
    x = alt.X("latency_ms:Q", title="latency, batch 1, all threads (ms)", scale=alt.Scale(zero=False))
    y = alt.Y("fidelity:Q", title=fidelity, axis=alt.Axis(format="%"), scale=alt.Scale(zero=False))
    points = (
        alt.Chart(data)
        .mark_circle(opacity=0.75)
        .encode(
            x=x,
            y=y,
            size=alt.Size("size_mb:Q", title="file size (MB)", scale=alt.Scale(range=[60, 1200])),
            color=alt.Color("kind:N", title="variant", scale=alt.Scale(scheme="tableau10")),
            tooltip=[
                alt.Tooltip("variant:N"),
                alt.Tooltip("fidelity:Q", title=fidelity, format=".1%"),
                alt.Tooltip("latency_ms:Q", title="latency (ms)", format=".1f"),
                alt.Tooltip("latency 1 thread (ms):Q", format=".1f"),
                alt.Tooltip("size_mb:Q", title="file (MB)", format=".1f"),
                alt.Tooltip("params (M):Q", format=".2f"),
            ],
        )
    )
    labels = alt.Chart(data).mark_text(align="left", dx=12, dy=-8, fontSize=11).encode(x=x, y=y, text="variant:N")
    return alt.LayerChart(layer=[points, labels])
