"""The backbone features every session shares (a Streamlit resource, so one per server process)."""

from __future__ import annotations

import streamlit as st

from core.finetune.extraction import FeatureCache


@st.cache_resource(show_spinner=False)
def feature_cache() -> FeatureCache:
    """Backbone features by image digest, shared by every session: training again on the same images is instant."""
    return FeatureCache()
