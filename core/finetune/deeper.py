"""Finetune mode's second stage: copies of the tail of the network train with the head on augmented images.

After epoch 0 (the head alone on frozen, cached features, core.finetune.epochs), the tail
(`TrainConfig.unfreeze`, core.finetune.depth) trains with the head: AdamW, discriminative learning
rates (lower for earlier stages), a linear warm-up then cosine decay, label smoothing. The frozen
prefix runs without autograd, and its outputs for `views` augmented views of each image are computed
once and reused every epoch when they fit in memory (the augmentation acts on the image, before the
prefix, so a cached view is exactly what the prefix would give again). Each batch runs through the
tail in micro-batches whose saved activations fit a budget (core.finetune.micro_batch), their
gradients summed before one optimiser step. Batch-norm layers keep their ImageNet statistics (eval
mode) unless `adapt_batchnorm` is set: a few hundred images make noisy statistics, and the features
the head learnt move under it. The epochs themselves (`train_tail`) take their optimiser, schedule and
training mode as a `TailRecipe`: the from-scratch baseline (core.finetune.scratch) runs them too.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from core.finetune.augment import augmentation, augmented_batch, training_image
from core.finetune.config import EpochLog, TrainConfig
from core.finetune.depth import Cut
from core.finetune.epochs import BestHead, Labels, Outcome, epoch_log, fit_head, validation
from core.finetune.extraction import decode_item
from core.finetune.micro_batch import activation_bytes_per_image, even_slices, micro_batch_size
from core.finetune.tail import SplitBackbone, split_backbone
from core.finetune.trained import TrainedModel
from core.jobs.queue import give_way
from core.models.loading import LoadedModel
from core.preprocessing import model_batch
from core.progress import Progress
from core.runtime import train_channels_last

# The frozen prefix's outputs are kept for every view of every image only if they fit in this.
PREFIX_CACHE_BUDGET = 384 << 20


def caches_prefix(has_prefix: bool, cut_bytes: int) -> bool:
    """Whether the frozen prefix's outputs are computed once and reused: when there is a prefix to
    skip (the whole network training has none) and every view of every image fits the budget."""
    return has_prefix and cut_bytes <= PREFIX_CACHE_BUDGET


def _batch_seed(seed: int, epoch: int, batch: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + batch) % (2**63)


def fine_tune(
    loaded: LoadedModel,
    cut: Cut,
    train_size: int,
    labels: Labels,
    config: TrainConfig,
    generator: torch.Generator,
    outcome: Outcome,
    train_features: torch.Tensor,
    val_features: torch.Tensor,
    *,
    report: Callable[[EpochLog], None],
    progress: Progress | None,
    should_stop: Callable[[], bool] | None,
) -> TrainedModel:
    """Finetune mode once the features are there: epoch 0, then the tail's epochs; the best state as the model."""
    # Epoch 0: the head alone on frozen, cached features (fast mode's path), so that the tail starts
    # from a head that already makes sense instead of a random one whose gradients would wreck it.
    start = time.perf_counter()
    best = BestHead(outcome.head)
    fit_head(
        outcome.head, train_features, val_features, labels, config, generator, epochs=config.head_epochs, record=best
    )
    best_log, best_probs, best_state = best.best()
    outcome.head.load_state_dict(best_state)
    zeroth = dataclasses.replace(best_log, epoch=0, seconds=time.perf_counter() - start)
    outcome.record(zeroth, best_probs)
    report(zeroth)
    if should_stop is not None and should_stop():
        return outcome.finish(stopped_early=False, stopped_by_user=True)

    channels_last = train_channels_last(loaded.spec.traits, loaded.device) and cut.start is not None
    prepare = (lambda m: m.to(memory_format=torch.channels_last)) if channels_last else (lambda m: m)
    split = outcome.split = split_backbone(loaded, cut, prepare=prepare)
    steps = config.epochs * math.ceil(len(labels.train_items) / config.batch_size)
    recipe = TailRecipe(
        optimizer=finetune_optimizer(outcome.head, split, config),
        schedule=warmup_cosine(steps, config.warmup),
        train_mode=lambda: split.train(adapt_batchnorm=config.adapt_batchnorm),
    )
    inputs = TailInputs(loaded, split, labels, config, train_size, channels_last, progress)
    return train_tail(inputs, config, generator, outcome, recipe, report=report, should_stop=should_stop)


def warmup_cosine(steps: int, warmup_share: float) -> Callable[[int], float]:
    """timm's schedule over `steps`: a linear warm-up, then cosine decay to zero at the last step."""
    warmup = min(steps - 1, round(warmup_share * steps))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    return schedule


@dataclass(frozen=True)
class TailRecipe:
    """How the trainable part learns: finetune mode's, or the from-scratch baseline's (core.finetune.scratch)."""

    optimizer: torch.optim.Optimizer
    schedule: Callable[[int], float]  # optimiser step -> the share of each group's learning rate
    train_mode: Callable[[], None]  # puts the trainable modules in their training mode
    out_of_time: Callable[[], bool] = lambda: False  # checked after each epoch: True ends the training


def train_tail(
    inputs: TailInputs,
    config: TrainConfig,
    generator: torch.Generator,
    outcome: Outcome,
    recipe: TailRecipe,
    *,
    report: Callable[[EpochLog], None],
    should_stop: Callable[[], bool] | None,
) -> TrainedModel:
    """The trainable part's epochs with the head, on augmented images; the best state as the model."""
    split, labels, device = inputs.split, inputs.labels, inputs.loaded.device
    head, optimizer = outcome.head, recipe.optimizer
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, recipe.schedule)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    micro = inputs.micro_batch_size(head)
    stopped_early = stopped_by_user = False
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        head.train()
        recipe.train_mode()
        total_loss, total_correct = 0.0, 0
        order = torch.randperm(len(labels.train_items), generator=generator)
        views = torch.randint(config.views, (len(labels.train_items),), generator=generator)
        for batch_number, indices in enumerate(order.split(config.batch_size)):
            give_way()  # a visitor's short work (an embedding, a Grad-CAM, a classify) goes first
            cut_input = inputs.train_batch(indices, views[indices], seed=_batch_seed(config.seed, epoch, batch_number))
            targets = labels.y_train[indices].to(device)
            optimizer.zero_grad(set_to_none=True)
            for rows in even_slices(len(indices), micro):  # gradients add up: one step for the whole batch
                give_way()  # also between micro-batches: a whole-network step takes seconds on a small host
                logits = head(split.tail(cut_input[rows], inputs.train_size))
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
            val_loss, val_acc, probs = validation(head, inputs.val_features(), labels.y_val)
        seconds = time.perf_counter() - start
        log = epoch_log(epoch, labels, total_loss, total_correct, val_loss, val_acc, seconds, train_seconds)
        improved = outcome.record(log, probs)
        report(log)
        if not improved and epoch - outcome.best_epoch >= config.patience:
            stopped_early = True
            break
        if recipe.out_of_time():
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


class TailInputs:
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
        labels: Labels,
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
