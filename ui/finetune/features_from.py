"""Fast mode's "Features from": the stage whose features the head reads, and the probes' suggestion.

Where Features' "Which layer fits your images" (ui.transfer) found a stage of this backbone clearly
ahead of the penultimate layer, a note says so, with a button that picks it.
"""

from __future__ import annotations

import streamlit as st

from core.errors import ZooScopeError
from core.features.cut import spec_stage_points
from core.features.stages import PENULTIMATE
from core.finetune.features_from import suggestion
from core.models.catalog import ModelSpec
from ui.transfer import TRANSFER_RESULT

KEY = "finetune_features_from"


def _label(name: str) -> str:
    return "the penultimate layer (what Classify uses)" if name == PENULTIMATE else name


def _pick(stage: str) -> None:
    st.session_state[KEY] = stage


def features_from_choice(spec: ModelSpec) -> str | None:
    """The stage chosen for fast mode (None: the penultimate layer), with the probes' suggestion above it."""
    try:
        stages = [point.name for point in spec_stage_points(spec)]
    except ZooScopeError:  # no linear head: no stage to choose from, the mode itself refuses it
        return None
    if st.session_state.get(KEY) not in stages:
        st.session_state[KEY] = PENULTIMATE  # a backbone without the stage chosen before
    suggested = suggestion(st.session_state.get(TRANSFER_RESULT), spec.name)
    if suggested is not None and suggested.stage in stages and st.session_state[KEY] != suggested.stage:
        st.info(suggested.text, icon=":material/layers:")
        st.button(
            f"Train from {suggested.stage}",
            key="finetune_features_from_suggested",
            on_click=_pick,
            args=(suggested.stage,),
            icon=":material/content_cut:",
        )
    chosen = st.selectbox(
        "Features from",
        stages,
        format_func=_label,
        key=KEY,
        help=(
            "The layer whose features the head learns from. Early stages see edges and textures, late ones "
            "ImageNet's objects: for images unlike photos (digits, scans, textures) a middle stage can fit better. "
            "The network is cut there, so the model is smaller and faster. Features → Which layer fits your "
            "images measures each stage on your data."
        ),
    )
    return None if chosen == PENULTIMATE else chosen
