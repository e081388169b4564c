"""The "unlike the images it was trained on" minimum of a person's model as a slider: the model holds the value,
every page shows it (core.finetune.familiarity)."""

from __future__ import annotations

import math

import streamlit as st

from core.finetune.familiarity import NOT_SURE_UNLIKE, PASS_RATE, Familiarity
from core.finetune.trained import TrainedModel

HELP = (
    "How alike a photo must be to the nearest training image (the cosine similarity of their features, as the "
    f"head sees them) to get an answer; below it the answer is “{NOT_SURE_UNLIKE}”, however confident the model "
    f"is. The default comes from the validation images: {PASS_RATE:.0%} of them reach it. 0 turns it off. "
    "The value is saved in the model bundle."
)
NO_FAMILIARITY = (
    "This model keeps nothing of its training images (a bundle made by an earlier ZooScope, or a training "
    "stopped early): only its confidence says when it is not sure."
)


def _changed(familiarity: Familiarity, key: str) -> None:
    familiarity.min_similarity = float(st.session_state[key])


def familiarity_slider(trained: TrainedModel, key: str, container=st) -> float | None:
    """A 0-1 slider over the model's minimum similarity (moving it changes the model's, on every page); None,
    and nothing drawn, for a model that keeps nothing of its training images."""
    familiar = trained.familiarity
    if familiar is None:
        return None
    st.session_state[key] = familiar.min_similarity  # whichever page set it last
    container.slider(
        "Unlike the training images below",
        0.0,
        1.0,
        step=0.01,
        key=key,
        format="%.2f",
        on_change=_changed,
        args=(familiar, key),
        help=HELP,
    )
    return familiar.min_similarity


def familiarity_meaning(trained: TrainedModel) -> str:
    """One sentence on what the minimum means on the validation images."""
    familiar = trained.familiarity
    if familiar is None:
        return NO_FAMILIARITY
    share = familiar.passing_share()
    passing = "" if math.isnan(share) else f"{share:.0%} of the validation images reach it; "
    return (
        f"{passing}a photo less than {familiar.min_similarity:.2f} alike to its nearest training image "
        f"reads “{NOT_SURE_UNLIKE}”."
    )
