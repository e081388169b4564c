"""The runs of this session side by side, and which of them is the model to try, use and export."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from core.features.stages import PENULTIMATE
from core.finetune.trained import TrainedModel
from ui.finetune import keys
from ui.finetune.describe import trained_part
from ui.finetune.runs_chart import accuracy_over_time, runs_curves
from ui.session import MY_MODEL
from ui.tables import data_table, share_column

MAX_RUNS = 8
RUNS_MEMORY = 256 << 20  # bytes of trained copies the runs table may hold
TRAINED_HERE = "trained here"
COLUMNS = [
    "run",
    "source",
    "backbone",
    "mode",
    "trained",
    "features from",
    "epochs",
    "kept epoch",
    "learning rate",
    "validation accuracy",
    "seconds",
]


@dataclass(frozen=True, eq=False)
class Run:
    """One training run of this session: its number in the runs table and the model it left."""

    number: int
    model: TrainedModel
    source: str = TRAINED_HERE  # or "imported: <file name>" for a bundle imported on another page


def add_run(trained: TrainedModel, source: str = "") -> None:
    """A finished (or stopped) run joins the runs table and becomes the model to try, use and export.

    `source`: empty for a training on this page, else where the model came from (an imported bundle's
    file): a run of its own, so the details of the trained runs stay theirs.
    """
    runs = st.session_state.setdefault(keys.RUNS, [])
    number = runs[-1].number + 1 if runs else 1
    runs.append(Run(number, trained, source or TRAINED_HERE))
    # Each run holds its own trained copies: the oldest go first to keep the session's memory bounded.
    while len(runs) > 1 and (len(runs) > MAX_RUNS or sum(run.model.trained_params for run in runs) * 4 > RUNS_MEMORY):
        del runs[0]
    st.session_state[MY_MODEL] = trained
    st.session_state[keys.RUN_PICK] = number


def add_imported_run(trained: TrainedModel, file_name: str) -> None:
    """A bundle imported on Classify: a run of its own, named after its file, and the model in use."""
    add_run(trained, source=f"imported: {file_name}")


def run_picked() -> None:
    number = st.session_state[keys.RUN_PICK]
    for run in st.session_state.get(keys.RUNS, []):
        if run.number == number:
            st.session_state[MY_MODEL] = run.model


def runs_section() -> None:
    """Every run of this session side by side; any of them can be the model to try, use and export."""
    runs = st.session_state.get(keys.RUNS) or []
    if not runs:
        return
    st.subheader("Runs in this session")
    data_table(
        runs_frame(runs),
        hide_index=True,
        column_config={
            "learning rate": st.column_config.NumberColumn(format="%g"),
            "validation accuracy": share_column(help="On the held-back validation images, at the kept epoch"),
            "seconds": st.column_config.NumberColumn(format="%.1f", help="The whole training, features included"),
        },
        key="finetune_runs_table",
    )
    curves = accuracy_over_time([(f"Run {run.number}: {run.model.config.mode}", run.model) for run in runs])
    if curves["run"].nunique() > 1:  # side by side in time: fine-tuning against the from-scratch baseline
        st.altair_chart(runs_curves(curves), width="content")
    current = st.session_state.get(MY_MODEL)
    numbers = [run.number for run in runs]
    picked = next((run.number for run in runs if run.model is current), None)
    st.session_state[keys.RUN_PICK] = picked
    labels = {run.number: run_label(run) for run in runs}
    st.selectbox(
        "The model to try, use on Classify and export",
        numbers,
        format_func=lambda number: labels.get(number, f"Run {number}"),
        key=keys.RUN_PICK,
        on_change=run_picked,
        placeholder="Pick a run",
    )


def run_label(run: Run) -> str:
    imported = f"{run.source}, " if run.source != TRAINED_HERE else ""
    return f"Run {run.number}: {imported}{run.model.backbone}, {run.model.config.mode}"


def run_row(run: Run) -> dict:
    trained, config = run.model, run.model.config
    return {
        "run": run.number,
        "source": run.source,
        "backbone": trained.backbone,
        "mode": config.mode,
        "trained": "head" if config.mode == "fast" else trained_part(config),
        "features from": config.features_from or PENULTIMATE,  # a stage: the network was cut there
        "epochs": trained.epochs_run,
        "kept epoch": trained.best_epoch if run.source == TRAINED_HERE else None,  # a bundle does not say
        "learning rate": config.lr,
        "validation accuracy": trained.val_accuracy,
        "seconds": trained.seconds,
    }


def runs_frame(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per training run of this session, side by side: frozen features against fine-tuning."""
    return pd.DataFrame([run_row(run) for run in runs], columns=COLUMNS)
