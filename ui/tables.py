"""Tables the pages share: probabilities as bars, one image's top-k."""

from __future__ import annotations

import streamlit as st

from core.predict import Classification, top_k_frame


def share_column(label: str | None = None, **kwargs) -> st.column_config.Column:
    """A 0..1 column drawn as a bar with its percentage."""
    return st.column_config.ProgressColumn(label, format="percent", min_value=0, max_value=1, **kwargs)


def top_k_table(result: Classification, *, show_rank: bool = True, container=st) -> None:
    """One image's top-k: label and probability bar (and rank)."""
    column_config = {"probability": share_column()}
    if not show_rank:
        column_config["rank"] = None
    container.dataframe(top_k_frame(result), hide_index=True, column_config=column_config)
