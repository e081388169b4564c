"""The one streamlit import in core: a process-wide model pool shared by every browser session."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from core.loading import LoadedModel, ModelPool
from core.progress import Progress
from core.runtime import pick_device


@st.cache_resource(show_spinner=False)
def model_pool() -> ModelPool:
    return ModelPool(pick_device())


def get_model(
    name: str, *, progress: Progress | None = None, on_evict: Callable[[str], None] | None = None
) -> LoadedModel:
    return model_pool().get(name, progress=progress, on_evict=on_evict)
