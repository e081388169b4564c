"""What the pages keep in a person's session: the keys two pages share, and reusing a last answer."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TypeVar

import streamlit as st

T = TypeVar("T")

# This session's fine-tuned model (a core.finetune.trained.TrainedModel): Fine-tune writes it,
# Classify offers it as MY_MODEL_OPTION in its model selectbox (CLASSIFY_MODEL).
MY_MODEL = "my_model"
MY_MODEL_OPTION = "my model"
CLASSIFY_MODEL = "classify_model"
# Inside's model selectbox, and the `?model=` address it last followed (links from Compare and
# Models open /inside?model=NAME).
INSIDE_MODEL = "inside_model"
INSIDE_FOLLOWED = "inside_followed"


def reuse(slot: str, key: Hashable, compute: Callable[[], T]) -> T:
    """`compute()` once per `key` in this session: reruns with the same inputs reuse the answer.

    Only the last answer is kept in `slot`. A key compares with ==, so objects that compare by
    identity (a TrainedModel) make a new answer when they are new, even with the same settings.
    """
    previous = st.session_state.get(slot)
    if previous is not None and previous[0] == key:
        return previous[1]
    value = compute()
    st.session_state[slot] = (key, value)
    return value
