"""What a training will cost before it starts: the time of each choice of depth, measured here, and the
learning-rate finder."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
import streamlit as st

from core.datasets.labelled import Dataset, stratified_split
from core.errors import ZooScopeError
from core.finetune.config import TrainConfig
from core.finetune.depth import DEPTH_LABELS
from core.finetune.estimate import DepthCost, estimate_seconds, measure_costs
from core.finetune.lr_find import find_lr
from core.models import weights
from core.models.catalog import all_specs
from core.models.keys import ModelKey
from ui.charts import lr_finder as lr_finder_chart
from ui.finetune import keys
from ui.finetune.cache import feature_cache
from ui.loading import load_with_progress
from ui.model_pool import model_pool
from ui.progress import progress_bar
from ui.session import recall, remember, reuse
from ui.tables import data_table
from ui.text import duration, verbatim


def estimates_frame(
    costs: dict[str, DepthCost], config: TrainConfig, n_train: int, n_val: int, *, uncached: int
) -> pd.DataFrame:
    """One row per choice of how much trains: its parameters and how long this training would take."""
    rows = []
    for depth, cost in costs.items():
        seconds = estimate_seconds(cost, config, n_train, n_val, uncached=uncached)
        rows.append(
            {
                "choice": DEPTH_LABELS[depth],
                "parameters that train": "the head" if depth == "head" else f"{cost.trainable_params / 1e6:.1f} M",
                "time": duration(seconds) if math.isfinite(seconds) else f"not possible: {cost.reason}",
            }
        )
    return pd.DataFrame(rows, columns=["choice", "parameters that train", "time"])


def time_estimates(dataset: Dataset, backbone: str, config: TrainConfig) -> None:
    """About how long each choice takes here: one batch of these images timed on this machine, once."""
    spec = all_specs()[backbone]
    if ModelKey(backbone) not in model_pool().loaded() and not weights.is_available(spec):
        st.caption(f"Times appear here once {backbone}'s weights are on this machine (they download when you train).")
        return
    try:
        loaded = load_with_progress(ModelKey(backbone)).torch
        key = (id(dataset), backbone, config.train_size, config.flip, config.adapt_batchnorm, config.head)

        def measure():
            with progress_bar("Timing one batch for each choice…") as progress:
                return measure_costs(loaded, dataset.items, config, progress=progress)

        costs = reuse(keys.COSTS, key, measure)
    except ZooScopeError as error:
        st.caption(verbatim(str(error)))
        return
    train_items, val_items = stratified_split(dataset.items, val_fraction=config.val_fraction, seed=config.seed)
    cache = feature_cache()
    uncached = sum((backbone, item.digest) not in cache for item in dataset.items)
    data_table(
        estimates_frame(costs, config, len(train_items), len(val_items), uncached=uncached),
        hide_index=True,
        key="finetune_estimates",
    )
    st.caption("Each time is measured on one batch of your images on this machine; early stopping can make it shorter.")


def lr_finder(dataset: Dataset, backbone: str, config: TrainConfig, options: Sequence[float]) -> None:
    """fastai's lr_find on the head: loss against learning rate, and the nearest of `options` to use."""
    key = (id(dataset), backbone, config.head, config.batch_size, config.weight_decay, config.label_smoothing)
    if st.button(
        "Find a learning rate",
        key="finetune_find_lr",
        icon=":material/query_stats:",
        help="Trains a fresh head for a moment at growing learning rates on the frozen features and plots the loss.",
    ):
        try:
            loaded = load_with_progress(ModelKey(backbone)).torch
            with progress_bar("Trying learning rates…") as progress:
                finding = find_lr(loaded, dataset, config, cache=feature_cache(), progress=progress)
        except ZooScopeError as error:
            st.error(verbatim(str(error)), icon=":material/error:")
            return
        remember(keys.LR_FINDING, key, finding)
    finding = recall(keys.LR_FINDING, key)
    if finding is None:
        return
    nearest = min(options, key=lambda option: abs(math.log(option) - math.log(finding.suggestion)))
    st.altair_chart(lr_finder_chart(finding.frame, finding.suggestion), width="content")
    st.caption(
        f"Suggested: {finding.suggestion:.1e}, a tenth of the rate where the loss was lowest (fastai's rule); "
        "past that the loss climbs."
    )
    st.button(
        f"Use {nearest:g}",
        key="finetune_use_lr",
        on_click=lambda: st.session_state.update({keys.LR: nearest}),
        disabled=config.lr == nearest,
    )
