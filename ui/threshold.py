"""The "not sure" threshold of a person's model as a slider: the model holds the value, every page shows it."""

from __future__ import annotations

import streamlit as st

from core.classify.predict import Classification
from core.finetune.familiarity import NOT_SURE_UNLIKE
from core.finetune.threshold import MAX_DEFAULT, NOT_SURE, PASS_RATE
from core.finetune.trained import TrainedModel
from ui.text import verbatim

HELP = (
    f"Below this top-1 probability the answer is “{NOT_SURE}”: a model knows only its own classes, "
    "and names one of them even for a photo of something else. The default comes from the validation "
    f"images: {PASS_RATE:.0%} of those the model classified correctly reach it (never above "
    f"{MAX_DEFAULT:.0%}, never below chance, 1 / the number of classes). 0 turns it off. "
    "The value is saved in the model bundle."
)


def _changed(trained: TrainedModel, key: str) -> None:
    trained.threshold = st.session_state[key] / 100


def threshold_slider(trained: TrainedModel, key: str, container=st) -> float:
    """A 0-100% slider over `trained.threshold`; moving it changes the model's threshold (on every page)."""
    st.session_state[key] = round(trained.threshold * 100)  # whichever page set it last
    container.slider(
        "Not sure below",
        0,
        100,
        key=key,
        format="%d%%",
        on_change=_changed,
        args=(trained, key),
        help=HELP,
    )
    return trained.threshold


def answer_line(result: Classification) -> str:
    """Markdown: the top-1 and its probability, or "not sure" and why, with the best guess."""
    top = result.top1
    if result.unlike_training and result.similarity is not None and result.min_similarity is not None:
        return (
            f"**{NOT_SURE_UNLIKE.capitalize()}** · best guess {verbatim(top.label)} at {top.probability:.1%}; "
            f"its nearest training image is {result.similarity:.2f} alike, "
            f"below the {result.min_similarity:.2f} minimum"
        )
    if result.below_threshold:
        return (
            f"**{NOT_SURE.capitalize()}** · best guess {verbatim(top.label)} at {top.probability:.1%}, "
            f"below the {result.threshold:.0%} threshold"
        )
    return f"**{verbatim(top.label)}** · {top.probability:.1%}"
