"""Transfer learning on a shared, read-only backbone: a new head, then, in finetune mode, more of the network.

Training builds private views of the shared model (core.features.backbone) and trains only
modules that belong to this person:

- "fast" mode: the backbone is frozen, so every image's features are computed once (and kept in
  a `FeatureCache` across trainings) and the head trains for many epochs on those vectors
  (core.finetune.epochs);
- "finetune" mode, fastai's `fine_tune` with timm's ingredients: first that same head on frozen,
  cached features (epoch 0), then copies of the tail of the network (`TrainConfig.unfreeze`,
  core.finetune.depth) train with it on augmented images (core.finetune.deeper).

Both modes keep the state with the lowest validation loss (in finetune mode, epoch 0 competes
too: fine-tuning never returns a model worse on validation than the head alone), stop after
`patience` epochs without improvement, and evaluate at the model's own resolution.

Everything is deterministic for a seed: the head's initialisation, shuffling and dropout use a
private `torch.Generator`; augmentation (which torchvision draws from the global generator) runs
under a lock with the global generator forked and seeded per batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from core.datasets.labelled import Dataset, stratified_split
from core.errors import ZooScopeError
from core.features.backbone import backbone_view, frozen_features
from core.finetune.augment import resolve_train_size
from core.finetune.config import EpochLog, TrainConfig
from core.finetune.deeper import fine_tune
from core.finetune.depth import check_memory, cut_for
from core.finetune.epochs import Labels, Outcome, fit_head
from core.finetune.extraction import FeatureCache, extract_features
from core.finetune.heads import build_head
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
    train_size = resolve_train_size(spec, config.train_size) if config.mode == "finetune" else spec.input_size
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
    head = build_head(
        config.head, frozen.feature_dim, len(classes), hidden=config.hidden, dropout=config.dropout, generator=generator
    ).to(device)
    features = extract_features(
        frozen_features(loaded, frozen, runtime=runtime, progress=progress),
        loaded.preprocess,
        list(train_items) + list(val_items),
        backbone=spec.name,
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

    try:
        if config.mode == "fast":
            stopped_early, stopped_by_user = fit_head(
                head,
                train_features,
                val_features,
                labels,
                config,
                generator,
                epochs=config.epochs,
                record=outcome.record,
                report=report,
                should_stop=should_stop,
            )
            return outcome.finish(stopped_early=stopped_early, stopped_by_user=stopped_by_user)
        return fine_tune(
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
    except ZooScopeError:
        raise
    except BaseException:
        if on_interrupt is not None and outcome.has_model:
            on_interrupt(outcome.finish(stopped_early=False, stopped_by_user=True))
        raise
