"""What the pages keep in a person's session: the keys two pages share, and reusing a last answer."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, NamedTuple, TypeVar

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


class Answer(NamedTuple):
    """What a slot holds: the last answer and the inputs (`key`) it was made for."""

    key: Hashable
    value: Any


def remember(slot: str, key: Hashable, value: T) -> T:
    """Keep `value` in `slot` as the answer for `key` (the slot's previous answer goes)."""
    st.session_state[slot] = Answer(key, value)
    return value


def recall(slot: str, key: Hashable, default: Any = None) -> Any:
    """The answer kept in `slot` if it was made for `key` (compared with ==), else `default`."""
    answer = st.session_state.get(slot)
    return answer.value if answer is not None and answer.key == key else default


def latest(slot: str, default: Any = None) -> Any:
    """The answer kept in `slot`, whatever it was made for; `default` if there is none."""
    answer = st.session_state.get(slot)
    return answer.value if answer is not None else default


def reuse(slot: str, key: Hashable, compute: Callable[[], T]) -> T:
    """`compute()` once per `key` in this session: reruns with the same inputs reuse the answer.

    Only the last answer is kept in `slot`. A key compares with ==, so objects that compare by
    identity (a TrainedModel) make a new answer when they are new, even with the same settings.
    """
    answer = st.session_state.get(slot)
    if answer is not None and answer.key == key:
        return answer.value
    return remember(slot, key, compute())
