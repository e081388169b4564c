"""Getting shared models from the pool on a page: a progress bar the first time, a note on unloads."""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

from core.engines.choice import Model
from core.errors import NetworkUnavailable, ZooScopeError
from ui.model_pool import get_model, model_pool
from ui.progress import progress_bar


def load_with_progress(name: str, *, label: str | None = None) -> Model:
    """The shared model `name`; raises core.errors.ZooScopeError (e.g. WeightsUnavailable) for the page to show."""
    evicted: list[str] = []
    if name in model_pool().loaded():
        model = get_model(name, on_evict=evicted.append)
    else:
        with progress_bar(label or f"Loading {name}…") as progress:
            model = get_model(name, progress=progress, on_evict=evicted.append)
    if evicted:
        budget = model_pool().budget_mb
        st.info(
            f"Unloaded {', '.join(evicted)} to stay under the {budget:,.0f} MB model memory budget "
            "(least recently used first).",
            icon=":material/memory:",
        )
    return model


def load_many(names: Sequence[str]) -> list[Model]:
    """Each model in `names` that loads; one that cannot is reported in the page and the others go on.

    NetworkUnavailable is raised instead: the page falls back to the models that run here (ui.fallback).
    """
    loaded = []
    for position, name in enumerate(names, start=1):
        try:
            loaded.append(load_with_progress(name, label=f"Loading {name} ({position} of {len(names)})…"))
        except NetworkUnavailable:
            raise
        except ZooScopeError as error:
            st.warning(f"**{name}** is left out: {error}", icon=":material/cloud_off:")
    return loaded
