"""Getting shared models from the pool on a page: a progress bar the first time, a note on unloads."""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

from core.engines.choice import export_memory_mb, export_pending
from core.engines.handle import ModelHandle
from core.errors import NetworkUnavailable, ZooScopeError
from core.jobs.queue import JobCancelled
from core.models.keys import ModelKey
from core.models.loading import LoadedModel
from ui.jobs import in_line
from ui.model_pool import get_model, model_pool
from ui.progress import progress_bar


def load_with_progress(key: ModelKey, *, label: str | None = None) -> ModelHandle:
    """The shared model `key`; raises core.errors.ZooScopeError (e.g. WeightsUnavailable) for the page to show,
    or core.jobs.queue.JobCancelled where its first export was cancelled (the page already says so)."""
    evicted: list[ModelKey] = []
    if key in model_pool().loaded():
        model = get_model(key, on_evict=evicted.append)
    elif export_pending(key, device := model_pool().device):
        # A first ONNX export (and int8 quantization) is heavy work: it waits its turn in the job queue.
        # Loading a model that is cached, or runs in PyTorch, never waits (light work stays light).
        export = f"Exporting {key} to ONNX Runtime (first use)"
        with in_line("export", export, memory_mb=export_memory_mb(key, device)), progress_bar(export) as progress:
            model = get_model(key, progress=progress, on_evict=evicted.append)
    else:
        with progress_bar(label or f"Loading {key}…") as progress:
            model = get_model(key, progress=progress, on_evict=evicted.append)
    if evicted:
        budget = model_pool().budget_mb
        st.info(
            f"Unloaded {', '.join(map(str, evicted))} to stay under the {budget:,.0f} MB model memory budget "
            "(least recently used first).",
            icon=":material/memory:",
        )
    return model


def backbone_for_bundle(key: ModelKey) -> LoadedModel:
    """The shared backbone a bundle's trained copies are made from (its model and weights version): PyTorch's
    tensors, the torch face."""
    return load_with_progress(key).torch


def load_many(keys: Sequence[ModelKey]) -> list[ModelHandle]:
    """Each model in `keys` that loads; one that cannot is reported in the page and the others go on.

    NetworkUnavailable is raised instead: the page falls back to the models that run here (ui.fallback).
    """
    loaded = []
    for position, key in enumerate(keys, start=1):
        try:
            loaded.append(load_with_progress(key, label=f"Loading {key} ({position} of {len(keys)})…"))
        except NetworkUnavailable:
            raise
        except JobCancelled:
            continue  # in_line said so, with a way to start again
        except ZooScopeError as error:
            st.warning(f"**{key}** is left out: {error}", icon=":material/cloud_off:")
    return loaded
