"""The process-wide model pool, cached by Streamlit and shared by every browser session."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from core.engines.choice import load_handle
from core.engines.handle import ModelHandle
from core.engines.pool import ModelPool
from core.models.keys import ModelKey
from core.progress import Progress
from core.runtime import pick_device


@st.cache_resource(show_spinner=False)
def model_pool() -> ModelPool:
    """Model handles in the runtime core.runtime decides (ZOOSCOPE_RUNTIME), or the engine their key names:
    on the CPU, ONNX Runtime sessions wherever the export is verified, one per model, shared by every session."""
    return ModelPool(pick_device(), loader=load_handle)


def get_model(
    key: ModelKey, *, progress: Progress | None = None, on_evict: Callable[[ModelKey], None] | None = None
) -> ModelHandle:
    return model_pool().get(key, progress=progress, on_evict=on_evict)
