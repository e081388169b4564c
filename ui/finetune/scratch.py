"""The from-scratch baseline's one setting: how long it trains, by default as long as the last fine-tuned run."""

from __future__ import annotations

import math

import streamlit as st

from core.datasets.labelled import Dataset
from core.finetune.scratch import DEFAULT_BUDGET_S
from core.finetune.trained import TrainedModel
from ui.finetune import keys

BUDGET = "finetune_scratch_seconds"  # the time budget's number input
SUGGESTED = "finetune_scratch_suggested"  # the budget last suggested: a new fine-tuned run suggests anew
MAX_BUDGET_S = 3600


def trained_on(trained: TrainedModel, dataset: Dataset) -> bool:
    """Whether `trained` was trained on `dataset`: the same classes, and its validation images among these."""
    if trained.metrics is None or list(trained.classes) != list(dataset.classes):
        return False
    digests = {item.digest for item in dataset.items}
    return all(outcome.item.digest in digests for outcome in trained.metrics.outcomes)


def latest_finetune_seconds(dataset: Dataset) -> float | None:
    """How long this session's latest fine-tune-mode run on `dataset` took, everything included; None if none."""
    for run in reversed(st.session_state.get(keys.RUNS) or []):
        if run.model.config.mode == "finetune" and trained_on(run.model, dataset):
            return run.model.seconds
    return None


def scratch_budget(dataset: Dataset) -> float:
    """The caption that says what the baseline is, and its time budget in seconds (the person may change it)."""
    seconds = latest_finetune_seconds(dataset)
    suggested = DEFAULT_BUDGET_S if seconds is None or not math.isfinite(seconds) else float(math.ceil(seconds))
    suggested = min(max(suggested, 1.0), MAX_BUDGET_S)
    if st.session_state.get(SUGGESTED) != suggested:  # a new fine-tuned run since: follow it
        st.session_state[SUGGESTED] = st.session_state[BUDGET] = suggested
    since = (
        f"the {suggested:,.0f} s your last fine-tuned run on these images took"
        if seconds is not None
        else f"{suggested:,.0f} s (train in fine-tune mode first to give it the same time as that run)"
    )
    st.caption(
        "A baseline that shows what ImageNet pre-training buys: the same architecture with **random weights**, "
        f"every layer trained on the same augmented images, for the same time: {since}."
    )
    budget = st.number_input(
        "Time budget (seconds)",
        1.0,
        float(MAX_BUDGET_S),
        step=10.0,
        format="%.0f",
        key=BUDGET,
        help="Training stops after the epoch that crosses it; the epoch with the lowest validation loss is kept.",
    )
    return float(budget)
