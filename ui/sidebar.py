"""The sidebar every page shares: device, loaded models, process memory, unload."""

from __future__ import annotations

import streamlit as st

from core.cache import model_pool
from core.runtime import device_label, pick_device, process_memory_mb


def render_sidebar() -> None:
    pool = model_pool()
    loaded = pool.loaded()
    with st.sidebar:
        st.markdown("#### This server")
        st.caption(device_label(pick_device()))
        st.metric("Process memory", f"{process_memory_mb():,.0f} MiB")
        st.markdown("**Loaded models:** " + (", ".join(f"`{name}`" for name in loaded) if loaded else "none yet"))
        if st.button("Unload models", key="sidebar_unload", disabled=not loaded, icon=":material/eject:"):
            pool.unload()
            st.rerun()
