"""The process-wide model pool, cached by Streamlit and shared by every browser session."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from core.engines.choice import Model, load_classifier
from core.models.loading import ModelPool
from core.progress import Progress
from core.runtime import pick_device


@st.cache_resource(show_spinner=False)
def model_pool() -> ModelPool:
    """Models in the runtime core.runtime decides (ZOOSCOPE_RUNTIME): on the CPU, ONNX Runtime sessions
    wherever the export is verified, one per model, shared by every session."""
    return ModelPool(pick_device(), loader=load_classifier)


def get_model(name: str, *, progress: Progress | None = None, on_evict: Callable[[str], None] | None = None) -> Model:
    return model_pool().get(name, progress=progress, on_evict=on_evict)
