"""Altair chart builders: pure functions from DataFrames to charts."""

from __future__ import annotations

import altair as alt
import pandas as pd


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
    base = alt.Chart(data).encode(
        x=alt.X("latency_ms:Q", title="measured latency (ms)"),
        y=alt.Y("acc1:Q", title="ImageNet top-1 (%)", scale=alt.Scale(zero=False)),
    )
    points = base.mark_circle(opacity=0.8).encode(
        size=alt.Size("params_m:Q", title="parameters (M)"),
        color=alt.Color("family:N", title="family"),
        tooltip=[
            alt.Tooltip("model:N"),
            alt.Tooltip("family:N"),
            alt.Tooltip("acc1:Q", title="top-1 (%)", format=".1f"),
            alt.Tooltip("latency_ms:Q", title="latency (ms)", format=".1f"),
            alt.Tooltip("params_m:Q", title="parameters (M)", format=".1f"),
        ],
    )
    labels = base.mark_text(align="left", baseline="middle", dx=8).encode(text=alt.Text("model:N"))
    return alt.layer(points, labels)


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


def confusion_heatmap(frame: pd.DataFrame) -> alt.LayerChart:
    """Confusion matrix as a heat map with the count in each cell: true class down, predicted across.

    Columns: true, predicted, count (long form, every pair; classes keep the frame's order).
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
    counts = (
        base.transform_joinaggregate(max_count="max(count)")
        .mark_text(baseline="middle")
        .encode(
            text=alt.Text("count:Q"),
            color=alt.condition("datum.count > datum.max_count / 2", alt.value("white"), alt.value("black")),
        )
    )
    return alt.layer(cells, counts).properties(width=alt.Step(step), height=alt.Step(step))


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
    return alt.layer(curve, marker).properties(width=420, height=220)
