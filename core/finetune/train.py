"""Transfer learning on a shared, read-only backbone: a new head, then, in finetune mode, more of the network.

Training builds private views of the shared model (core.features.backbone) and trains only
modules that belong to this person:

- "fast" mode: the backbone is frozen, so every image's features are computed once (and kept in
  a `FeatureCache` across trainings) and the head trains for many epochs on those vectors;
- "finetune" mode, fastai's `fine_tune` with timm's ingredients: first that same head on frozen,
  cached features (epoch 0), then copies of the tail of the network (`TrainConfig.unfreeze`,
  core.finetune.depth) train with it on augmented images: AdamW, discriminative learning rates
  (lower for earlier stages), a linear warm-up then cosine decay, label smoothing. The frozen
  prefix runs without autograd, and its outputs for `views` augmented views of each image are
  computed once and reused every epoch when they fit in memory (the augmentation acts on the
  image, before the prefix, so a cached view is exactly what the prefix would give again).
  Batch-norm layers keep their ImageNet statistics (eval mode) unless `adapt_batchnorm` is set:
  a few hundred images make noisy statistics, and the features the head learnt move under it.
  Each batch runs through the tail in micro-batches whose saved activations fit a budget
  (core.finetune.micro_batch), their gradients summed before one optimiser step.

Both modes keep the state with the lowest validation loss (in finetune mode, epoch 0 competes
too: fine-tuning never returns a model worse on validation than the head alone), stop after
`patience` epochs without improvement, and evaluate at the model's own resolution.

Everything is deterministic for a seed: the head's initialisation, shuffling and dropout use a
private `torch.Generator`; augmentation (which torchvision draws from the global generator) runs
under a lock with the global generator forked and seeded per batch.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.datasets.labelled import Dataset, LabelledImage, stratified_split
from core.errors import ZooScopeError
from core.features.backbone import backbone_view, frozen_features
from core.finetune.augment import augmentation, augmented_batch, resolve_train_size, training_image
from core.finetune.config import EpochLog, TrainConfig
from core.finetune.depth import Cut, check_memory, cut_for
from core.finetune.extraction import FeatureCache, decode_item, extract_features
from core.finetune.heads import build_head
from core.finetune.metrics import evaluate
from core.finetune.micro_batch import activation_bytes_per_image, even_slices, micro_batch_size
from core.finetune.tail import SplitBackbone, split_backbone
from core.finetune.threshold import default_threshold
from core.finetune.trained import TrainedModel
from core.models.loading import LoadedModel
from core.preprocessing import model_batch
from core.progress import Progress
from core.runtime import configure_threads, train_channels_last

# The frozen prefix's outputs are kept for every view of every image only if they fit in this.
PREFIX_CACHE_BUDGET = 384 << 20


def caches_prefix(has_prefix: bool, cut_bytes: int) -> bool:
    """Whether the frozen prefix's outputs are computed once and reused: when there is a prefix to
    skip (the whole network training has none) and every view of every image fits the budget."""
    return has_prefix and cut_bytes <= PREFIX_CACHE_BUDGET


def _batch_seed(seed: int, epoch: int, batch: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + batch) % (2**63)


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# --- the epochs -----------------------------------------------------------------------------------


@dataclass
class _Labels:
    classes: list[str]
    train_items: list[LabelledImage]
    val_items: list[LabelledImage]
    y_train: torch.Tensor
    y_val: torch.Tensor


class _Outcome:
    """The epochs so far and the best state among them: what train() returns, or hands over when interrupted."""

    def __init__(self, loaded: LoadedModel, config: TrainConfig, labels: _Labels, head: nn.Module, started: float):
        self.loaded, self.config, self.labels, self.head, self.started = loaded, config, labels, head, started
        self.split: SplitBackbone | None = None
        self.history: list[EpochLog] = []
        self.best_loss, self.best_epoch = math.inf, 0
        self.best_head: dict[str, torch.Tensor] | None = None
        self.best_tuned: dict | None = None  # None: the shared backbone as it is
        self.best_probs: torch.Tensor | None = None

    def record(self, log: EpochLog, probs: torch.Tensor) -> bool:
        """Add an epoch; keep its state if its validation loss is the lowest so far."""
        self.history.append(log)
        if log.val_loss < self.best_loss or self.best_probs is None:
            self.best_loss, self.best_epoch, self.best_probs = log.val_loss, log.epoch, probs
            self.best_head = _state(self.head)
            self.best_tuned = self.split.state() if self.split is not None and log.epoch > 0 else None
            return True
        return False

    @property
    def has_model(self) -> bool:
        return self.best_probs is not None

    def finish(self, *, stopped_early: bool, stopped_by_user: bool) -> TrainedModel:
        """The best state so far as the TrainedModel."""
        spec = self.loaded.spec
        self.head.load_state_dict(self.best_head)
        self.head.eval().requires_grad_(False)
        tuned: dict[str, nn.Module] = {}
        if self.best_tuned is not None:
            self.split.load_state(self.best_tuned)
            self.split.eval()
            tuned = {path: module.requires_grad_(False) for path, module in self.split.tuned.items()}
        metrics = evaluate(self.best_probs, self.labels.y_val, self.labels.classes, self.labels.val_items)
        return TrainedModel(
            backbone=spec.name,
            weights_id=spec.weights_id,
            classes=self.labels.classes,
            config=self.config,
            head=self.head,
            tuned=tuned,
            history=list(self.history),
            metrics=metrics,
            epochs_run=sum(log.epoch > 0 for log in self.history),  # epoch 0 (finetune): the head alone
            stopped_early=stopped_early,
            stopped_by_user=stopped_by_user,
            best_epoch=self.best_epoch,
            val_accuracy=metrics.accuracy,
            seconds=time.perf_counter() - self.started,
            threshold=default_threshold(metrics.outcomes, len(self.labels.classes)),
        )


def _epoch_log(
    epoch: int,
    labels: _Labels,
    total_loss: float,
    total_correct: int,
    val_loss: float,
    val_acc: float,
    seconds: float,
    train_seconds: float,
) -> EpochLog:
    """An epoch's log from its summed training loss and correct answers; images per second over the
    `train_seconds` spent training (validation not included where the caller times it apart)."""
    n = len(labels.train_items)
    return EpochLog(
        epoch=epoch,
        train_loss=total_loss / n,
        train_acc=total_correct / n,
        val_loss=val_loss,
        val_acc=val_acc,
        seconds=seconds,
        images_per_second=n / train_seconds,
    )


def _validation(head: nn.Module, features: torch.Tensor, y_val: torch.Tensor) -> tuple[float, float, torch.Tensor]:
    """(loss, accuracy, probabilities) of the head on validation features."""
    with torch.inference_mode():
        logits = head(features).float().cpu()
        probs = logits.softmax(dim=1)
        return float(F.cross_entropy(logits, y_val)), float((probs.argmax(dim=1) == y_val).float().mean()), probs


class _BestHead:
    """The head's best epoch on fixed features, by validation loss (epoch 0 of finetune mode)."""

    def __init__(self, head: nn.Module):
        self.head = head
        self.log: EpochLog | None = None
        self.probs: torch.Tensor | None = None
        self.state: dict[str, torch.Tensor] | None = None

    def __call__(self, log: EpochLog, probs: torch.Tensor) -> bool:
        if self.log is not None and log.val_loss >= self.log.val_loss:
            return False
        self.log, self.probs, self.state = log, probs, _state(self.head)
        return True


def _fit_head(
    head: nn.Module,
    train_features: torch.Tensor,
    val_features: torch.Tensor,
    labels: _Labels,
    config: TrainConfig,
    generator: torch.Generator,
    *,
    epochs: int,
    record: Callable[[EpochLog, torch.Tensor], bool],
    report: Callable[[EpochLog], None] = lambda log: None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[bool, bool]:
    """The head alone on fixed feature vectors, for at most `epochs`. After each epoch, `record(log,
    probabilities)` says whether it is the best so far, then `report(log)`. Returns (stopped early,
    stopped by `should_stop`)."""
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    device = train_features.device
    best_epoch = 0
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        head.train()
        total_loss, total_correct = 0.0, 0
        for indices in torch.randperm(len(labels.train_items), generator=generator).split(config.batch_size):
            logits = head(train_features[indices.to(device)])
            targets = labels.y_train[indices].to(device)
            loss = criterion(logits, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += float(loss.detach()) * len(indices)
            total_correct += int((logits.detach().argmax(dim=1) == targets).sum())
        head.eval()
        val_loss, val_acc, probs = _validation(head, val_features, labels.y_val)
        seconds = time.perf_counter() - start
        log = _epoch_log(epoch, labels, total_loss, total_correct, val_loss, val_acc, seconds, train_seconds=seconds)
        improved = record(log, probs)  # before the callbacks, so that an interruption there keeps this epoch too
        best_epoch = epoch if improved else best_epoch
        report(log)
        if not improved and epoch - best_epoch >= config.patience:
            return True, False
        if should_stop is not None and should_stop():
            return False, epoch < epochs
    return False, False


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
    labels = _Labels(
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
    outcome = _Outcome(loaded, config, labels, head, started)

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
            stopped_early, stopped_by_user = _fit_head(
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
        return _finetune(
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


def _finetune(
    loaded: LoadedModel,
    cut: Cut,
    train_size: int,
    labels: _Labels,
    config: TrainConfig,
    generator: torch.Generator,
    outcome: _Outcome,
    train_features: torch.Tensor,
    val_features: torch.Tensor,
    *,
    report: Callable[[EpochLog], None],
    progress: Progress | None,
    should_stop: Callable[[], bool] | None,
) -> TrainedModel:
    # Epoch 0: the head alone on frozen, cached features (fast mode's path), so that the tail starts
    # from a head that already makes sense instead of a random one whose gradients would wreck it.
    start = time.perf_counter()
    best = _BestHead(outcome.head)
    _fit_head(
        outcome.head, train_features, val_features, labels, config, generator, epochs=config.head_epochs, record=best
    )
    outcome.head.load_state_dict(best.state)
    zeroth = dataclasses.replace(best.log, epoch=0, seconds=time.perf_counter() - start)
    outcome.record(zeroth, best.probs)
    report(zeroth)
    if should_stop is not None and should_stop():
        return outcome.finish(stopped_early=False, stopped_by_user=True)

    device = loaded.device
    channels_last = train_channels_last(loaded.spec.traits, device) and cut.start is not None
    prepare = (lambda m: m.to(memory_format=torch.channels_last)) if channels_last else (lambda m: m)
    split = outcome.split = split_backbone(loaded, cut, prepare=prepare)
    inputs = _TailInputs(loaded, split, labels, config, train_size, channels_last, progress)

    head = outcome.head
    optimizer = finetune_optimizer(head, split, config)
    steps = config.epochs * math.ceil(len(labels.train_items) / config.batch_size)
    warmup = min(steps - 1, round(config.warmup * steps))

    def schedule(step: int) -> float:  # timm's: a linear warm-up, then cosine decay to zero at the last step
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    micro = inputs.micro_batch_size(head)
    stopped_early = stopped_by_user = False
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        head.train()
        split.train(adapt_batchnorm=config.adapt_batchnorm)
        total_loss, total_correct = 0.0, 0
        order = torch.randperm(len(labels.train_items), generator=generator)
        views = torch.randint(config.views, (len(labels.train_items),), generator=generator)
        for batch_number, indices in enumerate(order.split(config.batch_size)):
            cut_input = inputs.train_batch(indices, views[indices], seed=_batch_seed(config.seed, epoch, batch_number))
            targets = labels.y_train[indices].to(device)
            optimizer.zero_grad(set_to_none=True)
            for rows in even_slices(len(indices), micro):  # gradients add up: one step for the whole batch
                logits = head(split.tail(cut_input[rows], train_size))
                loss = criterion(logits, targets[rows]) * (len(logits) / len(indices))  # the batch's mean
                loss.backward()
                total_loss += float(loss.detach()) * len(indices)
                total_correct += int((logits.detach().argmax(dim=1) == targets[rows]).sum())
            optimizer.step()
            scheduler.step()
        train_seconds = time.perf_counter() - start
        head.eval()
        split.eval()
        with torch.no_grad():
            val_loss, val_acc, probs = _validation(head, inputs.val_features(), labels.y_val)
        seconds = time.perf_counter() - start
        log = _epoch_log(epoch, labels, total_loss, total_correct, val_loss, val_acc, seconds, train_seconds)
        improved = outcome.record(log, probs)
        report(log)
        if not improved and epoch - outcome.best_epoch >= config.patience:
            stopped_early = True
            break
        if should_stop is not None and should_stop():
            stopped_by_user = epoch < config.epochs
            break
    return outcome.finish(stopped_early=stopped_early, stopped_by_user=stopped_by_user)


def finetune_optimizer(head: nn.Module, split: SplitBackbone, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the head and the tail's stages: discriminative learning rates (the head at `lr`, the
    last stage at `lr * body_lr`, each earlier stage `layer_decay` times the next), and weight decay on
    weights only (timm's rule: biases and normalisation scales, 1-D, are not pulled towards zero)."""
    rates = [(list(head.parameters()), config.lr)]
    for depth_from_end, paths in enumerate(reversed(split.cut.groups)):
        stage = [p for path in paths for p in split.tuned[path].parameters()]
        rates.append((stage, config.lr * config.body_lr * config.layer_decay**depth_from_end))
    groups = []
    for params, lr in rates:
        weights, others = [p for p in params if p.ndim > 1], [p for p in params if p.ndim <= 1]
        groups += [{"params": weights, "lr": lr, "weight_decay": config.weight_decay}] if weights else []
        groups += [{"params": others, "lr": lr, "weight_decay": 0.0}] if others else []
    return torch.optim.AdamW(groups)


class _TailInputs:
    """What the trainable tail is fed: the frozen prefix's outputs for augmented training images and for
    the validation images (at the model's own resolution, as the weights' transforms prepare them).

    When every view of every image fits in PREFIX_CACHE_BUDGET (and there is a prefix to skip), they are
    computed once here (`views` fixed augmented views per image); otherwise each batch is augmented
    afresh and the prefix runs again (without autograd).
    """

    def __init__(
        self,
        loaded: LoadedModel,
        split: SplitBackbone,
        labels: _Labels,
        config: TrainConfig,
        train_size: int,
        channels_last: bool,
        progress: Progress | None,
    ):
        self.loaded, self.split, self.labels, self.config = loaded, split, labels, config
        self.channels_last = channels_last
        self.progress = progress
        self.augment = augmentation(loaded.spec, size=train_size, flip=config.flip, crop_scale=config.crop_scale)
        self.train_size = train_size
        self.images = [training_image(item, loaded.spec) for item in labels.train_items]
        shape = self._prefix_shape(train_size)
        per_view = math.prod(shape) * 4 * len(self.images)
        val_bytes = math.prod(self._prefix_shape(loaded.spec.input_size)) * 4 * len(labels.val_items)
        has_prefix = split.cut.start is None or bool(split.cut.prefix)
        self.cached = caches_prefix(has_prefix, per_view * config.views + val_bytes)
        self.train_cache: torch.Tensor | None = None
        self.val_cache: torch.Tensor | None = None
        if self.cached:
            self._fill(shape)

    def _prefix_shape(self, size: int) -> tuple[int, ...]:
        with torch.no_grad():
            cut_input = self.split.prefix(torch.zeros(1, 3, size, size, device=self.loaded.device))
        return tuple(cut_input.shape[1:])

    def _layout(self, batch: torch.Tensor) -> torch.Tensor:
        if self.channels_last and batch.dim() == 4:
            return batch.contiguous(memory_format=torch.channels_last)
        return batch

    def _fill(self, shape: tuple[int, ...]) -> None:
        config, batch_size = self.config, self.config.batch_size
        n = len(self.images)
        self.train_cache = torch.empty((config.views, n, *shape), device=self.loaded.device)
        total = config.views * n + len(self.labels.val_items)
        done, start = 0, time.perf_counter()
        for view in range(config.views):
            for batch_number, first in enumerate(range(0, n, batch_size)):
                indices = torch.arange(first, min(first + batch_size, n))
                batch = self._augmented(indices, seed=_batch_seed(config.seed, -1 - view, batch_number))
                self.train_cache[view, indices] = self.split.prefix(batch)
                done += len(indices)
                self._report(done, total, start)
        self.val_cache = self._val_prefix(lambda count: self._report(done + count, total, start))

    def _report(self, done: int, total: int, start: float) -> None:
        if self.progress:
            speed = done / max(time.perf_counter() - start, 1e-9)
            self.progress(
                done,
                total,
                f"Running the frozen layers once per image and view: {done} of {total} ({speed:,.0f} images/s)",
            )

    def _augmented(self, indices: torch.Tensor, *, seed: int) -> torch.Tensor:
        batch = augmented_batch(self.augment, [self.images[i] for i in indices.tolist()], seed)
        return self._layout(batch.to(self.loaded.device))

    def _val_prefix(self, done: Callable[[int], None] = lambda count: None) -> torch.Tensor:
        outputs, items, batch_size = [], self.labels.val_items, self.config.batch_size
        for first in range(0, len(items), batch_size):
            images = [decode_item(item) for item in items[first : first + batch_size]]
            batch = self._layout(model_batch(images, self.loaded.preprocess).to(self.loaded.device))
            outputs.append(self.split.prefix(batch))
            done(first + len(images))
        return torch.cat(outputs)

    def micro_batch_size(self, head: nn.Module) -> int:
        """Images per micro-batch of a training step (core.finetune.micro_batch), measured on the first two
        training images' cut inputs through the tail and `head` (a valid dataset trains on at least two:
        two classes, one of each)."""
        sample = self.train_batch(torch.arange(2), torch.zeros(2, dtype=torch.long), seed=self.config.seed)

        def forward(rows: slice) -> torch.Tensor:
            return head(self.split.tail(sample[rows], self.train_size))

        # Eval mode: batch-norm layers that adapt would otherwise learn from this measurement.
        head.eval()
        self.split.eval()
        return micro_batch_size(activation_bytes_per_image(forward), self.config.batch_size)

    def train_batch(self, indices: torch.Tensor, views: torch.Tensor, *, seed: int) -> torch.Tensor:
        """The tail's input for these training images: a cached view of each, or a fresh one."""
        if self.train_cache is not None:
            device = self.train_cache.device
            return self._layout(self.train_cache[views.to(device), indices.to(device)])
        return self.split.prefix(self._augmented(indices, seed=seed))

    def val_features(self) -> torch.Tensor:
        """Features of the validation images through the tail as it is now (call without autograd)."""
        cut_inputs = self.val_cache if self.val_cache is not None else self._val_prefix()
        side, batch_size = self.loaded.spec.input_size, self.config.batch_size
        return torch.cat(
            [
                self.split.tail(self._layout(cut_inputs[first : first + batch_size]), side)
                for first in range(0, len(cut_inputs), batch_size)
            ]
        )
