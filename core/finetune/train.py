"""Transfer learning on a shared, read-only backbone: a new head, then, in finetune mode, more of the network.

Training builds private views of the shared model (core.features.backbone) and trains only
modules that belong to this person:

- "fast" mode: the backbone is frozen, so every image's features are computed once (and kept in
  a `FeatureCache` across trainings) and the head trains for many epochs on those vectors
  (core.finetune.epochs);
- "finetune" mode, fastai's `fine_tune` with timm's ingredients: first that same head on frozen,
  cached features (epoch 0), then copies of the tail of the network (`TrainConfig.unfreeze`,
  core.finetune.depth) train with it on augmented images (core.finetune.deeper);
- "scratch" mode, the baseline that shows what pre-training buys: the same network from random
  weights, all of it trained on the same augmented images for a time budget (core.finetune.scratch).

Every mode keeps the state with the lowest validation loss (in finetune mode, epoch 0 competes
too: fine-tuning never returns a model worse on validation than the head alone), stops after
`patience` epochs without improvement, and evaluates at the model's own resolution.

Everything is deterministic for a seed (scratch mode's time budget aside): the head's initialisation,
shuffling and dropout use a private `torch.Generator`; augmentation and scratch mode's random weights
(drawn from torch's global generator) run under a lock with that generator forked and seeded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from core.datasets.labelled import Dataset, stratified_split
from core.errors import ZooScopeError
from core.features.backbone import backbone_view
from core.finetune.augment import resolve_train_size
from core.finetune.config import EpochLog, TrainConfig
from core.finetune.deeper import fine_tune
from core.finetune.depth import check_memory, cut_for
from core.finetune.epochs import Labels, Outcome, fit_head
from core.finetune.extraction import FeatureCache, extract_features
from core.finetune.familiarity import learn_familiarity
from core.finetune.features_from import feature_source
from core.finetune.heads import InputScale, build_head
from core.finetune.scratch import from_scratch
from core.finetune.trained import TrainedModel
from core.models.loading import LoadedModel
from core.progress import Progress
from core.runtime import configure_threads


def train(
    loaded: LoadedModel,
    dataset: Dataset,
    config: TrainConfig,
    *,
    cache: FeatureCache | None = None,
    progress: Progress | None = None,
    on_epoch: Callable[[EpochLog], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_interrupt: Callable[[TrainedModel], None] | None = None,
    runtime: str = "torch",
) -> TrainedModel:
    """Train a new head (and in finetune mode copies of the tail of the network) on `dataset`.

    Holds back a stratified validation split, keeps the state with the lowest validation loss,
    stops after `config.patience` epochs without improvement, and checks `should_stop()` after
    every epoch (the first always completes). `loaded.module` is only ever read. `runtime` is the engine the
    shared model runs in (its handle's): in ONNX Runtime, fast mode's features come from there too
    (core.features.backbone.frozen_features).

    If `on_epoch` or `progress` raises once there is a model (after the first epoch; in finetune
    mode, once the head alone has trained), `on_interrupt` first receives the best model so far
    (`stopped_by_user=True`), then the exception propagates. Any BaseException counts: a click on
    a Streamlit page while it trains stops the running script this way, with a StopException (or
    RerunException) raised by the next `st.*` call in the callback.
    """
    started = time.perf_counter()
    configure_threads()
    spec = loaded.spec
    dataset.validate()
    cut = cut_for(spec.name, config.depth)  # refuses a depth this model cannot be cut at, before any work
    train_size = resolve_train_size(spec, config.train_size) if config.mode != "fast" else spec.input_size
    check_memory(spec.name, cut)
    classes = list(dataset.classes)
    index_of = {label: i for i, label in enumerate(classes)}
    train_items, val_items = stratified_split(dataset.items, val_fraction=config.val_fraction, seed=config.seed)
    if not train_items or not val_items:
        raise ZooScopeError("There are too few images to hold some back for validation: add more images to each class.")
    labels = Labels(
        classes,
        train_items,
        val_items,
        torch.tensor([index_of[item.label] for item in train_items]),
        torch.tensor([index_of[item.label] for item in val_items]),
    )
    device = loaded.device
    generator = torch.Generator().manual_seed(config.seed)
    frozen = backbone_view(loaded)
    source = feature_source(loaded, frozen, config)  # the penultimate layer's, or a stage's (fast mode)
    head = build_head(
        config.head, source.dim, len(classes), hidden=config.hidden, dropout=config.dropout, generator=generator
    ).to(device)
    if config.mode == "scratch":  # random weights: no frozen features to compute, no head alone first
        outcome = Outcome(loaded, config, labels, head, started)
        with _handing_over(outcome, on_interrupt):
            trained = from_scratch(
                loaded,
                cut,
                train_size,
                labels,
                config,
                generator,
                outcome,
                on_epoch=on_epoch,
                progress=progress,
                should_stop=should_stop,
            )
            return _remembering(trained, loaded, labels, config, runtime=runtime, progress=progress)
    features = extract_features(
        source.extractor(runtime=runtime, progress=progress),
        loaded.preprocess,
        list(train_items) + list(val_items),
        backbone=source.cache_key,  # one entry per weights version and stage: resnet50's V1 and V2 features differ
        batch_size=config.batch_size,
        cache=cache,
        progress=progress,
        device=device,
    )
    train_features, val_features = features[: len(train_items)].to(device), features[len(train_items) :].to(device)
    outcome = Outcome(loaded, config, labels, head, started)

    def report(log: EpochLog) -> None:
        if on_epoch:
            on_epoch(log)
        if progress:
            speed = f" · {log.images_per_second:,.0f} images/s" if config.mode == "finetune" else ""
            what = "Head on frozen features" if log.epoch == 0 else f"Epoch {log.epoch} of {config.epochs}"
            progress(
                log.epoch,
                config.epochs,
                f"{what}: validation loss {log.val_loss:.3f}, accuracy {log.val_acc:.1%}{speed}",
            )

    def remember(trained: TrainedModel) -> TrainedModel:
        frozen_inputs = None if trained.tuned else (train_features, val_features)  # trained copies: computed again
        return _remembering(trained, loaded, labels, config, runtime=runtime, frozen=frozen_inputs, progress=progress)

    try:
        if config.mode == "fast":
            if source.is_cut:
                outcome.input_scale = InputScale(train_features)
            scale = outcome.input_scale or (lambda features: features)
            stopped_early, stopped_by_user = fit_head(
                head,
                scale(train_features),
                scale(val_features),
                labels,
                config,
                generator,
                epochs=config.epochs,
                record=outcome.record,
                report=report,
                should_stop=should_stop,
            )
            return remember(outcome.finish(stopped_early=stopped_early, stopped_by_user=stopped_by_user))
        tuned = fine_tune(
            loaded,
            cut,
            train_size,
            labels,
            config,
            generator,
            outcome,
            train_features,
            val_features,
            report=report,
            progress=progress,
            should_stop=should_stop,
        )
        return remember(tuned)
    except ZooScopeError:
        raise
    except BaseException:
        if on_interrupt is not None and outcome.has_model:
            on_interrupt(outcome.finish(stopped_early=False, stopped_by_user=True))
        raise


@contextmanager
def _handing_over(outcome: Outcome, on_interrupt: Callable[[TrainedModel], None] | None) -> Iterator[None]:
    """train()'s promise for an interruption (not a ZooScopeError): the best model so far goes to `on_interrupt`."""
    try:
        yield
    except ZooScopeError:
        raise
    except BaseException:
        if on_interrupt is not None and outcome.has_model:
            on_interrupt(outcome.finish(stopped_early=False, stopped_by_user=True))
        raise


def _remembering(
    trained: TrainedModel,
    loaded: LoadedModel,
    labels: Labels,
    config: TrainConfig,
    *,
    runtime: str,
    frozen: tuple[torch.Tensor, torch.Tensor] | None = None,
    progress: Progress | None = None,
) -> TrainedModel:
    """`trained` with its training images' features, to say when a photo is unlike them
    (core.finetune.familiarity); `frozen`: the (train, validation) features the head read, where nothing else
    trained."""
    head_inputs = trained.head_inputs(loaded, runtime=runtime)
    trained.familiarity = learn_familiarity(
        head_inputs,
        loaded,
        labels.train_items,
        labels.val_items,
        frozen=frozen,
        seed=config.seed,
        progress=progress,
    )
    return trained
