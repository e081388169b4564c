"""The training run: Train's click waits its turn in the job queue (with the training's memory estimate),
then trains with live progress and curves; Stop (or any other click) leaves the line, or ends the
training with the best model so far."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import streamlit as st

from core.datasets.labelled import Dataset, stratified_split
from core.errors import ZooScopeError
from core.finetune.config import EpochLog, TrainConfig
from core.finetune.estimate import estimate_seconds
from core.finetune.footprint import training_memory_mb
from core.finetune.train import train
from core.finetune.trained import TrainedModel
from core.jobs.queue import JobCancelled
from core.models.catalog import get_spec
from core.models.keys import ModelKey, model_label
from ui.charts import training_curves
from ui.finetune import keys
from ui.finetune.cache import feature_cache
from ui.finetune.costs import drop_waiting_estimates, measured_costs
from ui.finetune.describe import history_frame, trained_part
from ui.finetune.history import add_run
from ui.jobs import in_line
from ui.loading import load_with_progress
from ui.model_pool import model_pool
from ui.session import MY_MODEL
from ui.text import verbatim


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
    started: bool = False  # its turn in the job queue came (before that, a click only leaves the line)
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
        elif config.mode == "scratch":
            self.work.progress(0.0, text="Reading the training images once…")  # random weights: no features
            budget = config.time_budget_s
            span = f"{budget:,.0f} s" if budget else f"{config.epochs} epochs"
            first = f"The {trained_part(config)}, for {span}…"
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
        if self.config.mode != "fast" and log.epoch >= 1:
            self.speed.caption(
                f"Epoch {log.epoch}: {log.seconds:.1f} s, {log.images_per_second:,.1f} training images per second "
                f"through the {trained_part(self.config)}."
            )
        self.chart.altair_chart(training_curves(history_frame(self.logs)), width="content")

    def clear(self) -> None:
        for element in (self.work, self.epochs, self.speed, self.chart):
            element.empty()


def stop_clicked() -> None:
    # Runs at the start of the run that the click started (the training run is being stopped meanwhile).
    if run := st.session_state.get(keys.RUN):
        run.stop_clicked = True


def train_live(
    dataset: Dataset, backbone: str, config: TrainConfig, run: TrainingRun, version: str | None = None
) -> TrainedModel | None:
    """Train (on `backbone` in weights `version`, None: the default) with progress bars and a live chart;
    None (with the reason on screen) if it cannot."""
    try:
        handle = load_with_progress(ModelKey(backbone, weights=version))
    except ZooScopeError as error:
        st.error(str(error), icon=":material/cloud_off:")
        return None
    live = LiveTraining(config, backbone=backbone)
    try:
        return train(
            handle.torch,
            dataset,
            config,
            cache=feature_cache(),
            progress=live.progress,
            on_epoch=live.on_epoch,
            on_interrupt=run.keep,
            runtime=handle.runtime,
        )
    except JobCancelled:
        raise  # the session closed: the training stopped at its next step (core.jobs.queue.give_way)
    except ZooScopeError as error:
        live.clear()
        st.error(verbatim(str(error)), icon=":material/error:")
        return None


def queue_estimates(
    dataset: Dataset, backbone: str, config: TrainConfig, version: str | None = None
) -> tuple[float, float | None]:
    """(MiB, seconds) this training should take: what the job queue admits it by and tells the others
    waiting. The time only where the costs were measured already (nothing waits for them)."""
    train_items, val_items = stratified_split(dataset.items, val_fraction=config.val_fraction, seed=config.seed)
    loaded = ModelKey(backbone, weights=version) in model_pool().loaded()
    memory = training_memory_mb(backbone, config, len(train_items), len(val_items), model_loaded=loaded)
    costs = measured_costs(backbone, config, version) if config.mode == "finetune" else None
    seconds = config.time_budget_s  # from scratch: its budget (and an epoch's overshoot)
    if costs is not None:
        slug = get_spec(backbone, version).slug  # the feature cache's key for this weights version
        uncached = sum((slug, item.digest) not in feature_cache() for item in dataset.items)
        seconds = estimate_seconds(costs[config.depth], config, len(train_items), len(val_items), uncached=uncached)
    return memory, seconds if seconds is not None and math.isfinite(seconds) else None


def run_training(dataset: Dataset, backbone: str, config: TrainConfig, version: str | None = None) -> None:
    """Wait in line, then train; a click on Stop (or anywhere else) leaves the line, or, while it trains,
    ends it with the best model so far.

    The click starts a new run of the page at once and stops this one at its next st.* call (the place in
    line redrawn, or the chart update after an epoch): train() hands its best model to `run.keep` there,
    and the new run picks it up.
    """
    try:
        memory_mb, estimate_s = queue_estimates(dataset, backbone, config, version)
    except ZooScopeError as error:  # a depth this model cannot be cut at: train() would refuse it the same way
        st.error(verbatim(str(error)), icon=":material/error:")
        return
    drop_waiting_estimates()  # a training never waits behind this session's own time estimates
    run = TrainingRun()
    st.button(
        "Stop",
        key="finetune_stop",
        on_click=stop_clicked,
        icon=":material/stop_circle:",
        help="Leaves the line, or ends the training after the current epoch and keeps the best model so far.",
    )
    st.session_state[keys.RUN] = run  # from here on `finished` is always set: a later run waits for it
    trained = None
    try:
        part = trained_part(config) if config.mode != "fast" else "the head"
        with in_line(
            "train",
            f"Fine-tuning {model_label(backbone, None, version)} ({part})",
            memory_mb=memory_mb,
            estimate_s=estimate_s,
        ):
            run.started = True
            trained = train_live(dataset, backbone, config, run, version)
        run.model, run.done = trained, True
    except JobCancelled:
        run.done = True
        st.warning("The server took this training out of the line (the session closed).", icon=":material/warning:")
    finally:
        run.finished.set()
    if trained is None:
        return
    add_run(trained)
    st.rerun()  # draw the results without the Stop button and the live view


def collect_training_run() -> None:
    """Take over the model of a training run that a click interrupted (waiting for it to stop), and say so."""
    run = st.session_state.get(keys.RUN)
    if run is None:
        return
    if not run.finished.is_set():
        with st.spinner("Stopping the training at the end of the current epoch…"):
            run.wait()
    del st.session_state[keys.RUN]
    kept = run.model
    if kept is not None and st.session_state.get(MY_MODEL) is not kept:
        add_run(kept)
    if run.done:
        return
    if not run.started:
        st.info("Left the line: nothing was trained.", icon=":material/stop_circle:")
        return
    if kept is None:
        st.info("The training stopped before its first epoch ended, so there is no model to keep.")
        return
    where = f"after epoch {kept.epochs_run}: kept the best epoch so far ({kept.best_epoch})"
    if run.stop_clicked:
        st.info(f"Stopped {where}.", icon=":material/stop_circle:")
    else:
        st.warning(f"The training was interrupted by a change on the page {where}.", icon=":material/warning:")
