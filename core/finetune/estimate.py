"""How long each choice of "how much to unfreeze" will take, measured on this machine before training.

`measure_costs` times one small batch of the person's own images: the augmentation, one frozen
forward of the whole backbone at the model's own resolution (the features of epoch 0 and the
validation images), and, for each depth, the frozen prefix and one training step of the tail
(forward, backward, AdamW) at the training resolution. `estimate_seconds` turns those per-image
costs into the whole training's time for given settings and data size: measuring is done once
per backbone and resolution; changing the epochs only redoes the arithmetic. A tail's forward
alone is taken as a third of its training step (the backward costs about twice the forward).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from core.datasets.labelled import LabelledImage
from core.errors import ZooScopeError
from core.features.backbone import backbone_view
from core.finetune.augment import augmentation, augmented_batch, resolve_train_size, training_image
from core.finetune.config import TrainConfig
from core.finetune.deeper import caches_prefix
from core.finetune.depth import DEPTHS, Cut, check_memory, cut_for
from core.finetune.heads import build_head
from core.finetune.tail import split_backbone
from core.models.loading import LoadedModel
from core.preprocessing import model_batch
from core.progress import Progress
from core.runtime import train_channels_last

SAMPLE_IMAGES = 4
FORWARD_SHARE = 1 / 3  # of a training step: the forward alone

T = TypeVar("T")


@dataclass(frozen=True)
class DepthCost:
    """Seconds per image for one depth, measured on one batch, or why this depth cannot train here."""

    depth: str
    trainable_params: int = 0
    augment: float = 0.0  # crop, jitter and tensor conversion (images are decoded once)
    features: float = 0.0  # the whole frozen backbone at the model's own resolution
    prefix: float = 0.0  # the frozen prefix at the training resolution, no autograd
    step: float = 0.0  # the tail's forward + backward + optimiser step at the training resolution
    scale: float = 1.0  # pixels at the model's own resolution / pixels at the training resolution
    prefix_bytes: int = 0  # one image's prefix output at the training resolution (what a view caches)
    has_prefix: bool = False  # a frozen part to skip by caching its outputs
    reason: str | None = None  # set when this depth cannot train this model


def _timed(work: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def _depth_cost(
    loaded: LoadedModel, cut: Cut, config: TrainConfig, batch: torch.Tensor, train_size: int, shared: DepthCost
) -> DepthCost:
    spec, device, n = loaded.spec, loaded.device, len(batch)
    channels_last = train_channels_last(spec.traits, device) and cut.start is not None

    def layout(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.contiguous(memory_format=torch.channels_last) if channels_last and tensor.dim() == 4 else tensor

    prepare = (lambda m: m.to(memory_format=torch.channels_last)) if channels_last else (lambda m: m)
    split = split_backbone(loaded, cut, prepare=prepare)
    head = build_head(config.head, split.feature_dim, 2, hidden=config.hidden).to(device)
    optimizer = torch.optim.AdamW([*head.parameters(), *split.parameters()], lr=1e-9)  # the work, not the change
    train_batch = layout(batch.to(device))
    prefix_seconds, cut_input = _timed(lambda: split.prefix(train_batch))

    def step() -> None:
        split.train(adapt_batchnorm=config.adapt_batchnorm)
        loss = head(split.tail(layout(cut_input), train_size)).logsumexp(dim=1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        split.eval()

    step_seconds, _ = _timed(step)
    return DepthCost(
        cut.depth,
        trainable_params=cut.trainable_params,
        augment=shared.augment,
        features=shared.features,
        prefix=prefix_seconds / n,
        step=step_seconds / n,
        scale=shared.scale,
        prefix_bytes=cut_input[0].numel() * cut_input.element_size(),
        has_prefix=cut.start is None or bool(cut.prefix),
    )


def measure_costs(
    loaded: LoadedModel,
    items: Sequence[LabelledImage],
    config: TrainConfig,
    *,
    progress: Progress | None = None,
) -> dict[str, DepthCost]:
    """Per-image costs of every depth for `loaded`, timed on one batch of up to SAMPLE_IMAGES of `items`."""
    spec = loaded.spec
    train_size = resolve_train_size(spec, config.train_size)
    images = [training_image(item, spec) for item in items[:SAMPLE_IMAGES]]
    if not images:
        raise ZooScopeError("There are no images to time a training step on.")
    n = len(images)
    if progress:
        progress(0, len(DEPTHS) + 1, f"Timing one batch of {n} images through the frozen backbone")
    augment = augmentation(spec, size=train_size, flip=config.flip, crop_scale=config.crop_scale)
    augment_seconds, batch = _timed(lambda: augmented_batch(augment, images, seed=0))
    frozen = backbone_view(loaded).module
    eval_batch = model_batch(images, loaded.preprocess).to(loaded.device)
    with torch.no_grad():
        frozen(eval_batch[:1])  # the first forward of a process plans its kernels: not part of the cost
        feature_seconds, _ = _timed(lambda: frozen(eval_batch))
    shared = DepthCost(
        "head", augment=augment_seconds / n, features=feature_seconds / n, scale=(spec.input_size / train_size) ** 2
    )
    costs: dict[str, DepthCost] = {}
    for done, depth in enumerate(DEPTHS, start=1):
        if progress:
            progress(done, len(DEPTHS) + 1, f"Timing one training step of {n} images for each choice: {depth}")
        try:
            cut = cut_for(spec.name, depth)
            check_memory(spec.name, cut)
        except ZooScopeError as error:
            costs[depth] = DepthCost(depth, reason=str(error))
            continue
        costs[depth] = _depth_cost(loaded, cut, config, batch, train_size, shared)
    return costs


def estimate_seconds(cost: DepthCost, config: TrainConfig, n_train: int, n_val: int, *, uncached: int = 0) -> float:
    """Seconds for the whole finetune-mode training to `cost.depth` on `n_train` + `n_val` images, every
    epoch run (early stopping can only make it shorter); NaN where that depth cannot train. `uncached`:
    images whose frozen features are not in the FeatureCache yet (epoch 0, the head alone, needs them)."""
    if cost.reason is not None:
        return math.nan
    validation = n_val * cost.step * FORWARD_SHARE * cost.scale  # the tail's forward, at the model's resolution
    cut_bytes = cost.prefix_bytes * (n_train * config.views + n_val * cost.scale)
    if caches_prefix(cost.has_prefix, int(cut_bytes)):
        inputs = config.views * n_train * (cost.augment + cost.prefix) + n_val * cost.features
        per_epoch = n_train * cost.step + validation
    else:
        inputs = 0.0
        per_epoch = n_train * (cost.augment + cost.prefix + cost.step) + n_val * cost.features + validation
    return uncached * cost.features + inputs + config.epochs * per_epoch
