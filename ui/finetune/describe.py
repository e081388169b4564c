"""A training in words and in the frame its curves are drawn from: shared by the live view, the results
and the runs table."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from core.finetune.config import EpochLog, TrainConfig


def trained_part(config: TrainConfig) -> str:
    """What trains besides the head, in words."""
    if config.mode == "scratch":
        return "whole network, from random weights"
    return {
        "head": "head on augmented images",
        "last": "last block and the head",
        "half": "last half of the network and the head",
        "all": "whole network",
    }[config.depth]


def history_frame(logs: Sequence[EpochLog]) -> pd.DataFrame:
    """EpochLogs in the long form `ui.charts.training_curves` draws: epoch, split, metric, value."""
    rows = [
        {"epoch": log.epoch, "split": split, "metric": metric, "value": value}
        for log in logs
        for split, metric, value in (
            ("train", "loss", log.train_loss),
            ("validation", "loss", log.val_loss),
            ("train", "accuracy", log.train_acc),
            ("validation", "accuracy", log.val_acc),
        )
    ]
    return pd.DataFrame(rows, columns=["epoch", "split", "metric", "value"])
