"""Pieces of the Fine-tune page: dataset preview, the live training view, results and the image gallery
behind the confusion matrix (the mistakes, or one cell's images)."""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
import streamlit as st
from PIL import Image

from core.datasets.labelled import Dataset
from core.datasets.zips import FOLDER_ENTRY, Skipped
from core.errors import ImageError
from core.finetune.config import EpochLog, TrainConfig
from core.finetune.depth import DEPTH_LABELS
from core.finetune.estimate import DepthCost, estimate_seconds
from core.finetune.extraction import FeatureCache
from core.finetune.metrics import Metrics, Outcome
from core.finetune.trained import TrainedModel
from core.images import decode_image, thumbnail
from ui.charts import CELL_SELECTION, confusion_heatmap, training_curves
from ui.session import reuse
from ui.tables import data_table, share_column
from ui.text import verbatim

PREVIEW_PER_CLASS = 6
PREVIEW_CLASSES = 12  # classes previewed with thumbnails; the counts table holds them all
PREVIEW_SIDE = 96
MISTAKES_LIMIT = 24  # images in the gallery
MISTAKES_PER_ROW = 6
# The gallery's filter: ALL_MISTAKES or a confusion cell (true, predicted). The selectbox holds it;
# a click on the heat map sets it too. The chart's key changes when the filter is chosen elsewhere, so that
# the chart comes back without a stale highlight.
CELL_KEY = "finetune_cell"
ALL_MISTAKES = "all mistakes"  # not None: a selectbox whose value is None shows no choice at all
CELL_OWNER_KEY = "finetune_cell_metrics"  # the Metrics (so the model) the filter was chosen for
CHART_NONCE_KEY = "finetune_confusion_nonce"


@st.cache_resource(show_spinner=False)
def feature_cache() -> FeatureCache:
    """Backbone features by image digest, shared by every session: training again on the same images is instant."""
    return FeatureCache()


def preview(data: bytes, side: int = PREVIEW_SIDE) -> Image.Image | None:
    try:
        return thumbnail(decode_image(data), side)
    except ImageError:
        return None


def dataset_previews(dataset: Dataset) -> dict[str, list[tuple[str, Image.Image]]]:
    """A few thumbnails for each of the first classes: computed once when the dataset is read."""
    previews: dict[str, list[tuple[str, Image.Image]]] = {}
    for label in dataset.classes[:PREVIEW_CLASSES]:
        members = [item for item in dataset.items if item.label == label][:PREVIEW_PER_CLASS]
        previews[label] = [(item.name, image) for item in members if (image := preview(item.data)) is not None]
    return previews


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


def skipped_frame(skipped: Sequence[Skipped]) -> tuple[pd.DataFrame, int]:
    """(file, reason) of every skipped file, and how many folder entries were left out of the list."""
    files = [entry for entry in skipped if entry.reason != FOLDER_ENTRY]
    frame = pd.DataFrame([{"file": e.name, "reason": e.reason} for e in files], columns=["file", "reason"])
    return frame, len(skipped) - len(files)


def show_dataset(dataset: Dataset, previews: dict[str, list[tuple[str, Image.Image]]]) -> None:
    total = len(dataset.items)
    st.subheader(f"{total:,} images in {len(dataset.classes)} classes")
    counts, pictures = st.columns([1, 2], gap="medium")
    data_table(dataset.counts_frame(), container=counts, hide_index=True)
    with pictures:
        for label, thumbs in previews.items():
            st.markdown(f"**{verbatim(label)}**")
            if thumbs:
                captions = [verbatim(name.rsplit("/", 1)[-1]) for name, _ in thumbs]
                st.image([image for _, image in thumbs], caption=captions, width=64)
        hidden = len(dataset.classes) - len(previews)
        if hidden > 0:
            st.caption(f"Previews of the first {len(previews)} classes; the table lists all {len(dataset.classes)}.")

    frame, folders = skipped_frame(dataset.skipped)
    if len(frame):
        with st.expander(f"{len(frame):,} files skipped, each with its reason", icon=":material/block:"):
            data_table(frame, hide_index=True, width="stretch")
            if folders:
                st.caption(f"{folders:,} folder entries of the zip are not listed.")
    if dataset.warnings:
        warnings = [verbatim(warning) for warning in dataset.warnings]
        text = warnings[0] if len(warnings) == 1 else "\n".join(f"- {warning}" for warning in warnings)
        st.warning(text, icon=":material/warning:")


@dataclass(eq=False)
class TrainingRun:
    """One click on Train, shared between the script run that trains and the run a later click starts.

    A click while a script runs (Streamlit's fast reruns) starts a new run of the page at once, in another
    thread, and asks the training run to stop: it raises StopException at its next st.* call, the chart
    update after an epoch, and from then on at every session_state access too. So the training run can
    only leave its model here (train()'s on_interrupt calls `keep`), and the new run waits for `finished`
    before taking it into session_state.
    """

    stop_clicked: bool = False  # set by the Stop button's callback, at the start of the new run
    done: bool = False  # train() returned (completed, stopped early, or refused with an error)
    model: TrainedModel | None = None
    finished: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread = field(default_factory=threading.current_thread)  # the script run that trains

    def keep(self, trained: TrainedModel) -> None:
        self.model = trained

    def wait(self) -> None:
        """Until the training run has handed over its model (or its thread is gone, whatever happened)."""
        while not self.finished.wait(0.5) and self.thread.is_alive():
            pass


class LiveTraining:
    """What a training run shows while it runs: train()'s progress and on_epoch callbacks land here.

    Two bars: the work before the epochs (features once per image; in finetune mode, then the
    frozen layers once per image and view) and the epochs, with the images per second that go
    through the layers that train. Each epoch redraws the loss/accuracy chart; that st.* call is
    also where Streamlit interrupts the run when the person clicks Stop (or changes anything).
    """

    def __init__(self, config: TrainConfig, *, backbone: str):
        self.config = config
        self.logs: list[EpochLog] = []
        self._epoch_reported = False  # train() calls on_epoch, then progress, for every epoch
        self.work = st.progress(0.0, text=f"Computing {backbone} features once per image…")
        if config.mode == "fast":
            first = f"Epoch 1 of {config.epochs}…"
        else:
            first = f"The head first, on frozen features; then {config.epochs} epochs with the {trained_part(config)}…"
        self.epochs = st.progress(0.0, text=first)
        self.speed = st.empty()
        self.chart = st.empty()

    def progress(self, done: int, total: int, message: str) -> None:
        bar = self.epochs if self._epoch_reported else self.work
        self._epoch_reported = False
        bar.progress(min(done / total, 1.0) if total else 0.0, text=message)

    def on_epoch(self, log: EpochLog) -> None:
        self.logs.append(log)
        self._epoch_reported = True
        if self.config.mode == "finetune" and log.epoch >= 1:
            self.speed.caption(
                f"Epoch {log.epoch}: {log.seconds:.1f} s, {log.images_per_second:,.1f} training images per second "
                f"through the {trained_part(self.config)}."
            )
        self.chart.altair_chart(training_curves(history_frame(self.logs)), width="content")

    def clear(self) -> None:
        for element in (self.work, self.epochs, self.speed, self.chart):
            element.empty()


def trained_part(config: TrainConfig) -> str:
    """What trains besides the head, in words."""
    return {
        "head": "head on augmented images",
        "last": "last block and the head",
        "half": "last half of the network and the head",
        "all": "whole network",
    }[config.depth]


def outcome(trained: TrainedModel) -> str:
    """One sentence: how the training ended and which epoch the model is."""
    if not trained.history:
        epochs = trained.epochs_run or "an unknown number of"
        return f"Imported from a bundle: {epochs} epochs of {trained.config.mode} training."
    kept = f"kept epoch {trained.best_epoch}, the one with the lowest validation loss"
    if trained.config.mode == "finetune" and trained.best_epoch == 0:
        kept = "kept epoch 0, the head trained alone on frozen features (no later epoch had a lower validation loss)"
    if trained.stopped_by_user:
        return f"Stopped after epoch {trained.epochs_run} of {trained.config.epochs}; {kept}."
    if trained.stopped_early:
        return (
            f"Stopped early after epoch {trained.epochs_run}: the validation loss had not improved for "
            f"{trained.config.patience} epochs; {kept}."
        )
    return f"Ran all {trained.epochs_run} epochs; {kept}."


def show_summary(trained: TrainedModel) -> None:
    accuracy, classes, epochs, best = st.columns(4)
    value = "n/a" if math.isnan(trained.val_accuracy) else f"{trained.val_accuracy:.1%}"
    accuracy.metric("Validation accuracy", value, help="On the held-back validation images, at the kept epoch.")
    classes.metric("Classes", len(trained.classes))
    epochs.metric("Epochs run", trained.epochs_run, help=f"At most {trained.config.epochs}")
    best.metric(
        "Kept epoch",
        trained.best_epoch if trained.history else "n/a",
        help="The epoch with the lowest validation loss (in fine-tune mode, 0 is the head trained alone)",
    )
    config = trained.config
    mode = "fast mode" if config.mode == "fast" else f"fine-tune mode ({trained_part(config)} trained)"
    settings = f"{mode}, {config.head} head, learning rate {config.lr:g}, batch size {config.batch_size}"
    took = f" Took {trained.seconds:.1f} s." if math.isfinite(trained.seconds) else ""
    st.caption(f"{outcome(trained)} {trained.backbone} backbone; {settings}.{took}")


def runs_frame(runs: Sequence[tuple[int, TrainedModel]]) -> pd.DataFrame:
    """One row per training run of this session, side by side: frozen features against fine-tuning."""
    rows = [
        {
            "run": number,
            "backbone": trained.backbone,
            "mode": trained.config.mode,
            "trained": "head" if trained.config.mode == "fast" else trained_part(trained.config),
            "epochs": trained.epochs_run,
            "kept epoch": trained.best_epoch,
            "learning rate": trained.config.lr,
            "validation accuracy": trained.val_accuracy,
            "seconds": trained.seconds,
        }
        for number, trained in runs
    ]
    columns = [
        "run",
        "backbone",
        "mode",
        "trained",
        "epochs",
        "kept epoch",
        "learning rate",
        "validation accuracy",
        "seconds",
    ]
    return pd.DataFrame(rows, columns=columns)


def confusion_chart_key() -> str:
    return f"finetune_confusion_{st.session_state.get(CHART_NONCE_KEY, 0)}"


def cell_clicked() -> None:
    """The heat map's on_select: the clicked cell filters the gallery; a click that clears the selection
    (a double click) shows every mistake again."""
    state = st.session_state.get(confusion_chart_key())
    points = state.selection.get(CELL_SELECTION) if state is not None else None
    st.session_state[CELL_KEY] = (points[0]["true"], points[0]["predicted"]) if points else ALL_MISTAKES


def redraw_chart() -> None:
    """The filter was chosen in the selectbox (or reset): a fresh chart, without the old cell highlighted."""
    st.session_state[CHART_NONCE_KEY] = st.session_state.get(CHART_NONCE_KEY, 0) + 1


def show_all() -> None:
    st.session_state[CELL_KEY] = ALL_MISTAKES
    redraw_chart()


def show_metrics(metrics: Metrics) -> None:
    if st.session_state.get(CELL_OWNER_KEY) is not metrics:  # a new model: every mistake, a fresh chart
        st.session_state[CELL_OWNER_KEY] = metrics
        st.session_state[CELL_KEY] = ALL_MISTAKES
        redraw_chart()
    st.markdown("**Per class** (validation images)")
    data_table(
        metrics.per_class_frame(),
        hide_index=True,
        column_config={
            "precision": share_column(help="Of the images called this, how many were"),
            "recall": share_column(help="Of the images of this class, how many found"),
            "f1": share_column("F1"),
            "support": st.column_config.NumberColumn("images", help="Validation images of this class"),
        },
    )
    st.markdown("**Confusion matrix**: how often each true class (row) was predicted as each class (column)")
    st.altair_chart(
        confusion_heatmap(metrics.confusion_frame(), selectable=True),
        width="content",
        key=confusion_chart_key(),
        on_select=cell_clicked,
        selection_mode=CELL_SELECTION,
    )
    st.caption("Click a cell to see its images below (double-click, or *Show all mistakes*, to go back).")


def cell_label(cell: tuple[str, str] | str, counts: dict[tuple[str, str], int], mistakes: int) -> str:
    if cell == ALL_MISTAKES:
        return f"All mistakes ({mistakes})"
    true, predicted = cell
    count = counts.get(cell, 0)
    if true == predicted:
        return f"{true}, classified correctly ({count})"
    return f"{true} predicted as {predicted} ({count})"


def chosen_cell(trained: TrainedModel, container=st) -> tuple[str, str] | None:
    """The selectbox of confusion cells (the keyboard's way to what a click on the heat map does)."""
    metrics = trained.metrics
    cells = metrics.cells()
    counts = {(true, predicted): count for true, predicted, count in cells}
    options: list[tuple[str, str] | str] = [ALL_MISTAKES, *counts]
    current = st.session_state.get(CELL_KEY, ALL_MISTAKES)
    if current not in options:  # an empty cell was clicked
        options.append(current)
    mistakes = len(metrics.mistakes)
    chosen = container.selectbox(
        "Show",
        options,
        format_func=lambda cell: cell_label(cell, counts, mistakes),
        key=CELL_KEY,
        on_change=redraw_chart,
        help="The validation images behind one cell of the confusion matrix, or every mistake.",
    )
    return None if chosen == ALL_MISTAKES else chosen


def outcome_cards(outcomes: Sequence[Outcome]) -> list[tuple[Image.Image | None, str]]:
    return [
        (
            preview(o.item.data, 160),
            f"{verbatim(o.item.name)} · true: {verbatim(o.true)} · predicted: {verbatim(o.predicted)} "
            f"({o.confidence:.0%})",
        )
        for o in outcomes[:MISTAKES_LIMIT]
    ]


def gallery_heading(cell: tuple[str, str] | None, count: int) -> str:
    if cell is None:
        return f"**{count} validation images misclassified**, most confident mistakes first"
    true, predicted = (verbatim(name) for name in cell)
    if cell[0] == cell[1]:
        return f"**{count} validation images of {true} classified correctly**, least confident first"
    return f"**{count} validation images of {true} predicted as {predicted}**, most confident first"


def show_gallery(trained: TrainedModel) -> None:
    """The mistakes, or the images of the confusion cell chosen above (by click or in the selectbox)."""
    metrics = trained.metrics
    pick, back = st.columns([2, 1], vertical_alignment="bottom")
    cell = chosen_cell(trained, container=pick)
    outcomes = metrics.mistakes if cell is None else metrics.in_cell(*cell)
    if cell is not None:
        back.button("Show all mistakes", key="finetune_show_all", on_click=show_all, icon=":material/undo:")
    if not outcomes:
        if cell is None:
            st.success("No mistakes on the validation images.", icon=":material/check_circle:")
        else:
            true, predicted = (verbatim(name) for name in cell)
            st.info(f"No validation image of {true} was predicted as {predicted}.")
        return
    shown = min(len(outcomes), MISTAKES_LIMIT)
    st.markdown(gallery_heading(cell, len(outcomes)))
    cards = reuse("finetune_gallery_cards", (trained, cell), lambda: outcome_cards(outcomes))
    for start in range(0, shown, MISTAKES_PER_ROW):
        columns = st.columns(MISTAKES_PER_ROW)
        for column, (image, caption) in zip(columns, cards[start : start + MISTAKES_PER_ROW], strict=False):
            if image is not None:
                column.image(image, caption=caption, width="stretch")
            else:
                column.caption(caption)
    if len(outcomes) > shown:
        st.caption(f"Showing the first {shown} of {len(outcomes)} images.")


def duration(seconds: float) -> str:
    """ "about 2 min 5 s" in words, for an estimate."""
    seconds = max(1, round(seconds))
    minutes, rest = divmod(seconds, 60)
    return f"about {minutes} min {rest:02d} s" if minutes else f"about {rest} s"


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
