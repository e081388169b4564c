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
