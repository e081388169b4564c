"""The sidebar every page shares: device, runtime, loaded models (each with the runtime it uses), memory, unload."""

from __future__ import annotations

import streamlit as st

from core.runtime import (
    ENGINE_LABELS,
    RUNTIME_ENV,
    device_label,
    pick_device,
    process_memory_mb,
    requested_runtime,
    resolve_runtime,
)
from ui.model_pool import model_pool


def runtime_line() -> str:
    """What runs the models on this server, as ZOOSCOPE_RUNTIME and the device decide."""
    requested = requested_runtime()
    engine = ENGINE_LABELS[resolve_runtime(requested, pick_device())]
    where = " where its export is verified against PyTorch" if engine != "PyTorch" else ""
    return f"Runtime: {engine}{where} (`{RUNTIME_ENV}={requested}`)"


def render_sidebar() -> None:
    pool = model_pool()
    models = pool.models()
    with st.sidebar:
        st.markdown("#### This server")
        st.caption(device_label(pick_device()))
        st.caption(runtime_line())
        st.metric("Process memory", f"{process_memory_mb():,.0f} MiB")
        if not models:
            st.markdown("**Loaded models:** none yet")
        else:
            st.markdown("**Loaded models:**")
            for model in models:
                st.markdown(f"`{model.name}` · {ENGINE_LABELS[model.runtime]}")
                if model.note:
                    st.caption(model.note)
        if st.button("Unload models", key="sidebar_unload", disabled=not models, icon=":material/eject:"):
            pool.unload()
            st.rerun()
