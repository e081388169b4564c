"""A trained model's results: how its training went, its curves, per-class metrics, and the confusion
matrix with the gallery of validation images behind it (the mistakes, or one cell's images)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import streamlit as st
from PIL import Image

from core.finetune.metrics import Metrics, Outcome
from core.finetune.trained import TrainedModel
from ui.charts import CELL_SELECTION, confusion_heatmap, training_curves
from ui.finetune import keys
from ui.finetune.data import preview
from ui.finetune.describe import history_frame, trained_part
from ui.session import reuse
from ui.tables import data_table, share_column
from ui.text import counted, verbatim

MISTAKES_LIMIT = 24  # images in the gallery
MISTAKES_PER_ROW = 6
# The gallery's filter (keys.CELL): ALL_MISTAKES or a confusion cell (true, predicted). The selectbox holds
# it; a click on the heat map sets it too. The chart's key changes when the filter is chosen elsewhere, so
# that the chart comes back without a stale highlight.
ALL_MISTAKES = "all mistakes"  # not None: a selectbox whose value is None shows no choice at all


def results(trained: TrainedModel) -> None:
    """The model's heading, how its training went, and, for a model trained here, where it goes wrong."""
    st.divider()
    st.header(trained.name)
    show_summary(trained)
    if trained.history:
        st.altair_chart(training_curves(history_frame(trained.history)), width="content")
    if trained.metrics is None:
        st.info("This model came from a bundle: its validation details stay with the session that trained it.")
    else:
        show_metrics(trained.metrics)
        show_gallery(trained)


def outcome(trained: TrainedModel) -> str:
    """One sentence: how the training ended and which epoch the model is."""
    if not trained.history:
        epochs = counted(trained.epochs_run, "epoch") if trained.epochs_run else "an unknown number of epochs"
        return f"Imported from a bundle: {epochs} of {trained.config.mode} training."
    kept = f"kept epoch {trained.best_epoch}, the one with the lowest validation loss"
    if trained.config.mode == "finetune" and trained.best_epoch == 0:
        kept = "kept epoch 0, the head trained alone on frozen features (no later epoch had a lower validation loss)"
    if trained.stopped_by_user:
        return f"Stopped after epoch {trained.epochs_run} of {trained.config.epochs}; {kept}."
    budget = trained.config.time_budget_s
    if budget is not None and not trained.stopped_early and trained.epochs_run < trained.config.epochs:
        return f"Its time budget of {budget:,.0f} s ran out during epoch {trained.epochs_run}; {kept}."
    if trained.stopped_early:
        return (
            f"Stopped early after epoch {trained.epochs_run}: the validation loss had not improved for "
            f"{counted(trained.config.patience, 'epoch')}; {kept}."
        )
    return f"Ran all {counted(trained.epochs_run, 'epoch')}; {kept}."


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
    mode = {
        "fast": "fast mode",
        "scratch": "from scratch (random weights, the whole network trained: the baseline for pre-training)",
    }.get(config.mode, f"fine-tune mode ({trained_part(config)} trained)")
    settings = f"{mode}, {config.head} head, learning rate {config.lr:g}, batch size {config.batch_size}"
    took = f" Took {trained.seconds:.1f} s." if math.isfinite(trained.seconds) else ""
    st.caption(f"{outcome(trained)} {trained.backbone} backbone; {settings}.{took}")


def confusion_chart_key() -> str:
    return keys.CONFUSION_CHART.format(nonce=st.session_state.get(keys.CHART_NONCE, 0))


def cell_clicked() -> None:
    """The heat map's on_select: the clicked cell filters the gallery; a click that clears the selection
    (a double click) shows every mistake again."""
    state = st.session_state.get(confusion_chart_key())
    points = state.selection.get(CELL_SELECTION) if state is not None else None
    st.session_state[keys.CELL] = (points[0]["true"], points[0]["predicted"]) if points else ALL_MISTAKES


def redraw_chart() -> None:
    """The filter was chosen in the selectbox (or reset): a fresh chart, without the old cell highlighted."""
    st.session_state[keys.CHART_NONCE] = st.session_state.get(keys.CHART_NONCE, 0) + 1


def show_all() -> None:
    st.session_state[keys.CELL] = ALL_MISTAKES
    redraw_chart()


def show_metrics(metrics: Metrics) -> None:
    if st.session_state.get(keys.CELL_OWNER) is not metrics:  # a new model: every mistake, a fresh chart
        st.session_state[keys.CELL_OWNER] = metrics
        st.session_state[keys.CELL] = ALL_MISTAKES
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
    if isinstance(cell, str):  # ALL_MISTAKES, the one option that is not a cell
        return f"All mistakes ({mistakes})"
    true, predicted = cell
    count = counts.get(cell, 0)
    if true == predicted:
        return f"{true}, classified correctly ({count})"
    return f"{true} predicted as {predicted} ({count})"


def chosen_cell(trained: TrainedModel, container=st) -> tuple[str, str] | None:
    """The selectbox of confusion cells (the keyboard's way to what a click on the heat map does)."""
    metrics = trained.metrics
    if metrics is None:
        return None
    cells = metrics.cells()
    counts = {(true, predicted): count for true, predicted, count in cells}
    options: list[tuple[str, str] | str] = [ALL_MISTAKES, *counts]
    current = st.session_state.get(keys.CELL, ALL_MISTAKES)
    if current not in options:  # an empty cell was clicked
        options.append(current)
    mistakes = len(metrics.mistakes)
    chosen = container.selectbox(
        "Show",
        options,
        format_func=lambda cell: cell_label(cell, counts, mistakes),
        key=keys.CELL,
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
    if metrics is None:  # an imported bundle carries no validation results
        return
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
    cards = reuse(keys.GALLERY_CARDS, (trained, cell), lambda: outcome_cards(outcomes))
    for start in range(0, shown, MISTAKES_PER_ROW):
        columns = st.columns(MISTAKES_PER_ROW)
        for column, (image, caption) in zip(columns, cards[start : start + MISTAKES_PER_ROW], strict=False):
            if image is not None:
                column.image(image, caption=caption, width="stretch")
            else:
                column.caption(caption)
    if len(outcomes) > shown:
        st.caption(f"Showing the first {shown} of {len(outcomes)} images.")
