"""What a training will cost before it starts: the time of each choice of depth, and the learning-rate finder.

The times come from per-image costs measured once per backbone, depth, training resolution and host
(core.finetune.cost_cache), shared by every session and kept on disk. Where they are not measured yet,
the measuring goes to the job queue as one background job (sessions asking for the same key share it),
and only this section polls for it (a fragment): the rest of the page, the Train button included, is
there at once, and a training started meanwhile waits for nothing.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import pandas as pd
import streamlit as st

from core.datasets.labelled import Dataset, LabelledImage, stratified_split
from core.engines.pool import ModelPool
from core.errors import ZooScopeError
from core.finetune.augment import resolve_train_size
from core.finetune.config import TrainConfig
from core.finetune.cost_cache import CostCache, CostKey, cache_file, host_key
from core.finetune.depth import DEPTH_LABELS, DEPTHS
from core.finetune.estimate import MAX_BATCH, SAMPLE_IMAGES, DepthCost, estimate_seconds, measure_costs
from core.finetune.footprint import measuring_memory_mb
from core.finetune.lr_find import find_lr
from core.jobs.queue import Job
from core.models import weights
from core.models.catalog import ModelSpec, get_spec
from core.models.keys import ModelKey
from core.runtime import configure_threads
from ui.charts import lr_finder as lr_finder_chart
from ui.finetune import keys
from ui.finetune.cache import feature_cache
from ui.jobs import job_queue, session_id
from ui.loading import load_with_progress
from ui.model_pool import model_pool
from ui.progress import progress_bar
from ui.session import recall, remember
from ui.tables import data_table
from ui.text import duration, verbatim

POLL_S = 2.0  # how often the section looks for a measurement under way


@st.cache_resource(show_spinner=False)
def shared_costs() -> CostCache:
    """The measured costs, one cache for every session, kept in the cache folder across restarts."""
    return CostCache(cache_file())


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


@functools.cache
def _train_size(name: str, version: str | None, size: int | None) -> int | str:
    """The training resolution, or why `name` (in weights `version`, whose input size it may change) cannot take
    `size` (a meta-device forward: once, not per render)."""
    try:
        return resolve_train_size(get_spec(name, version), size)
    except ZooScopeError as error:
        return str(error)


def cost_key(spec: ModelSpec, config: TrainConfig, device: str) -> CostKey:
    """What the costs of training `spec` with `config` here depend on (ZooScopeError for a size it cannot take)."""
    configure_threads()  # the host's thread count is part of the key: set it first
    size = _train_size(spec.name, spec.weights_choice, config.train_size)
    if isinstance(size, str):
        raise ZooScopeError(size)
    return CostKey(spec.name, size, config.head, config.adapt_batchnorm, config.flip, host_key(device))


def drop_waiting_estimates(keep: Job | None = None) -> None:
    """Take this session's measurings that have not started out of the line (but `keep`): settings changed,
    or a training is about to wait its turn, and nothing should wait behind a time no one looks at now."""
    queue = job_queue()
    for job in queue.jobs(owner=session_id()):
        if job.kind == "estimate" and job.state == "waiting" and job is not keep:
            queue.cancel(job)


def measured_costs(backbone: str, config: TrainConfig, version: str | None = None) -> dict[str, DepthCost] | None:
    """The costs of every depth for these settings (`backbone` in weights `version`) if they are measured already
    (never measures)."""
    try:
        return shared_costs().get(cost_key(get_spec(backbone, version), config, str(model_pool().device)), DEPTHS)
    except ZooScopeError:
        return None


def measuring_job(
    pool: ModelPool, key: CostKey, items: Sequence[LabelledImage], config: TrainConfig, model: ModelKey | None = None
) -> Job:
    """The background job that measures `key` on `items` (with `model` loaded: key's backbone in the weights
    version chosen, by default its default) and keeps the answer in the shared cache."""
    cache = shared_costs()
    model = model or ModelKey(key.backbone)

    def work(job: Job) -> dict[str, DepthCost]:
        loaded = pool.get(model, progress=job.progress).torch

        def progress(done: int, total: int, message: str) -> None:
            job.check()  # a cancelled job (its session closed) stops between depths
            job.progress(done, total, message)

        costs = measure_costs(loaded, items, config, progress=progress)
        cache.put(key, costs)
        return costs

    images = min(config.batch_size, MAX_BATCH)
    memory = measuring_memory_mb(key.backbone, config, images, model_loaded=model in pool.loaded())
    return job_queue().submit(
        work,
        kind="estimate",
        label=f"Timing a training step of {key.backbone} for each choice",
        owner=session_id(),
        memory_mb=memory,
    )


def time_estimates(dataset: Dataset, backbone: str, config: TrainConfig, version: str | None = None) -> None:
    """About how long each choice takes here: shown at once when measured, else measured in the background.
    `version`: the backbone's weights version (None: the default), whose input size may differ."""
    spec = get_spec(backbone, version)
    model = ModelKey(backbone, weights=version)
    pool = model_pool()
    if model not in pool.loaded() and not weights.is_available(spec):
        st.caption(f"Times appear here once {backbone}'s weights are on this machine (they download when you train).")
        return
    try:
        key = cost_key(spec, config, str(pool.device))
    except ZooScopeError as error:
        st.caption(verbatim(str(error)))
        return
    cache = shared_costs()
    if cache.get(key, DEPTHS) is None:
        items = list(dataset.items[:SAMPLE_IMAGES])
        job = cache.shared_job(
            key, lambda: measuring_job(pool, key, items, config, model), reusable=lambda job: job.state != "cancelled"
        )
        drop_waiting_estimates(keep=job)
        st.fragment(_measuring, run_every=POLL_S)(dataset, spec.slug, config, key, job)
        return
    _estimates_table(dataset, spec.slug, config, key)  # the slug: the feature cache's key for this version


def _measuring(dataset: Dataset, backbone: str, config: TrainConfig, key: CostKey, job: Job) -> None:
    """Polled every POLL_S seconds (only this section): where the measuring stands, then the table."""
    ready = shared_costs().get(key, DEPTHS) is not None
    if ready:
        _estimates_table(dataset, backbone, config, key)
    elif job.state == "failed":
        st.caption(verbatim(f"The times could not be measured: {job.error}"))
    else:
        st.caption(f"Measuring how long each choice takes… ({_where(job)})")
    if (ready or job.state == "cancelled") and _polled():
        # Once: the page again, to draw this section without polling, or to ask for a measuring anew
        # (the session that asked for this one changed its settings, or closed).
        st.rerun(scope="app")


def _polled() -> bool:
    """Whether this is one of the fragment's own runs (not the page's run that drew it first)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    context = get_script_run_ctx()
    return context is not None and bool(context.fragment_ids_this_run)


def _where(job: Job) -> str:
    """ "2nd in line", or what the measuring is timing now."""
    place = job_queue().place(job)
    if place:
        suffix = "th" if 10 <= place % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(place % 10, "th")
        return f"{place}{suffix} in line"
    if job.state == "running" and job.progress_message:
        return job.progress_message[0].lower() + job.progress_message[1:]
    return "starting"


def _estimates_table(dataset: Dataset, backbone: str, config: TrainConfig, key: CostKey) -> None:
    costs = shared_costs().get(key, DEPTHS)
    if costs is None:
        return
    train_items, val_items = stratified_split(dataset.items, val_fraction=config.val_fraction, seed=config.seed)
    cache = feature_cache()
    uncached = sum((backbone, item.digest) not in cache for item in dataset.items)
    data_table(
        estimates_frame(costs, config, len(train_items), len(val_items), uncached=uncached),
        hide_index=True,
        key="finetune_estimates",
    )
    st.caption(
        "Each time comes from a batch of images timed once on this machine (warmed up); early stopping can "
        "make it shorter."
    )


def lr_finder(
    dataset: Dataset, backbone: str, config: TrainConfig, options: Sequence[float], version: str | None = None
) -> None:
    """fastai's lr_find on the head (of `backbone` in weights `version`, None: the default): loss against learning
    rate, and the nearest of `options` to use."""
    key = (id(dataset), backbone, version, config.head, config.batch_size, config.weight_decay, config.label_smoothing)
    if st.button(
        "Find a learning rate",
        key="finetune_find_lr",
        icon=":material/query_stats:",
        help="Trains a fresh head for a moment at growing learning rates on the frozen features and plots the loss.",
    ):
        try:
            loaded = load_with_progress(ModelKey(backbone, weights=version)).torch
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
