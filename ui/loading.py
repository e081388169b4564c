"""Getting a shared model from the pool on a page: a progress bar the first time, a note on unloads."""

from __future__ import annotations

import streamlit as st

from core.cache import get_model, model_pool
from core.loading import LoadedModel
from ui.progress import progress_bar


def load_with_progress(name: str) -> LoadedModel:
    """The shared model `name`; raises core.errors.ZooScopeError (e.g. WeightsUnavailable) for the page to show."""
    if name in model_pool().loaded():
        return get_model(name)
    evicted: list[str] = []
    with progress_bar(f"Loading {name}…") as progress:
        model = get_model(name, progress=progress, on_evict=evicted.append)
    if evicted:
        st.info(f"Unloaded {', '.join(evicted)} to stay under the model memory budget.", icon=":material/memory:")
    return model
