"""The runs' validation accuracy against the time each had spent: fine-tuning beside the from-scratch baseline."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import altair as alt
import pandas as pd

from core.finetune.trained import TrainedModel

COLUMNS = ["run", "seconds", "validation accuracy"]


def accuracy_over_time(runs: Sequence[tuple[str, TrainedModel]]) -> pd.DataFrame:
    """One row per epoch of each (label, model) trained here: the seconds since its training began at that
    epoch's end (the work before the first epoch, features or decoding, counted first) and its accuracy."""
    rows = []
    for label, trained in runs:
        if not trained.history:
            continue  # imported from a bundle: its epochs stayed with the session that trained it
        epochs = sum(log.seconds for log in trained.history)
        before = max(trained.seconds - epochs, 0.0) if trained.seconds == trained.seconds else 0.0  # NaN: unknown
        ends = itertools.accumulate((log.seconds for log in trained.history), initial=before)
        for log, end in zip(trained.history, itertools.islice(ends, 1, None), strict=True):
            rows.append({"run": label, "seconds": end, "validation accuracy": log.val_acc})
    return pd.DataFrame(rows, columns=COLUMNS)


def runs_curves(frame: pd.DataFrame) -> alt.Chart:
    """Validation accuracy against seconds, one line per run."""
    return (
        alt.Chart(frame)
        .mark_line(point=True)
        .encode(
            x=alt.X("seconds:Q", title="seconds since the training began"),
            y=alt.Y("validation accuracy:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
            color=alt.Color("run:N", title=None, legend=alt.Legend(orient="top")),
            tooltip=[
                "run:N",
                alt.Tooltip("seconds:Q", format=".1f"),
                alt.Tooltip("validation accuracy:Q", format=".1%"),
            ],
        )
        .properties(width=560, height=240)
    )
