"""Tables the pages share: every st.dataframe goes through `data_table`; probabilities as bars; one image's top-k."""

from __future__ import annotations

from typing import Any

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


def top_k_table(result: Classification, *, show_rank: bool = True, container=st) -> None:
    """One image's top-k: label and probability bar (and rank)."""
    column_config: dict[str, ColumnConfig | None] = {"probability": share_column()}
    if not show_rank:
        column_config["rank"] = None
    data_table(top_k_frame(result), container=container, hide_index=True, column_config=column_config)
