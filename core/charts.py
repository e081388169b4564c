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
