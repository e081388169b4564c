"""Tables the pages share: every st.dataframe goes through `data_table`; probabilities as bars; one image's top-k."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st
from streamlit.elements.lib.column_types import ColumnConfig

from core.classify.predict import Classification, top_k_frame

# What a missing value (None, NaN) looks like in every table: nothing, like an empty string. Streamlit
# otherwise draws the word "None" (a failed file's top-1 and latency, a model with no latency measured).
MISSING = ""


def data_table(data: Any, *, container: Any = st, **kwargs: Any) -> Any:
    """st.dataframe (in `container`) with missing values drawn empty; every table in the app comes here."""
    return container.dataframe(data, placeholder=MISSING, **kwargs)


def share_column(label: str | None = None, **kwargs: Any) -> ColumnConfig:
    """A 0..1 column drawn as a bar with its percentage."""
    return st.column_config.ProgressColumn(label, format="percent", min_value=0, max_value=1, **kwargs)


def top_k_table(result: Classification, *, show_rank: bool = True, compact: bool = False, container=st) -> None:
    """One image's top-k: label and probability bar (and rank); `compact`: the probability as a number
    ("37.1%"), for a narrow column where a bar would push its figure out of view."""
    probability = (
        st.column_config.NumberColumn("probability", format="percent", width=72) if compact else share_column()
    )
    column_config: dict[str, ColumnConfig | None] = {"probability": probability}
    if compact:
        column_config["label"] = st.column_config.TextColumn("label", width=100)
    if not show_rank:
        column_config["rank"] = None
    data_table(top_k_frame(result), container=container, hide_index=True, column_config=column_config)


def without_idle_columns(
    frame: pd.DataFrame, *, empty: tuple[str, ...] = (), constant: tuple[str, ...] = ()
) -> pd.DataFrame:
    """`frame` less the columns that carry nothing here: those of `empty` whose every value is missing or
    blank (an error column with no error), and those of `constant` that also repeat one value on every row
    that has one (a batch's latency share, the same for each of its photos)."""

    def idle(column: str) -> bool:
        values = frame[column].replace("", None).dropna()
        return values.empty or (column in constant and len(frame) > 1 and values.nunique() == 1)

    return frame.drop(columns=[column for column in (*empty, *constant) if column in frame and idle(column)])
