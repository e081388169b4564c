"""How long each choice of "how much to unfreeze" will take, measured on this machine before training.

`measure_costs` times a batch of the person's own images the way train() runs them (its batch size): decoding,
the augmentation, one frozen forward of the whole backbone at the model's own resolution (the
features of epoch 0), and, for each depth, the frozen prefix, one training step of the tail
(forward, backward in micro-batches, AdamW) and the tail's forward without autograd (validation),
at the training resolution. Every part runs once untimed first and is then timed twice, keeping the
faster: a first run plans kernels and allocates memory, and timing it made a whole-network estimate
3.6x too long (the issue: "about 2 min 09 s" for a 36 s run). `estimate_seconds` turns those
per-image costs into the whole training's time for given settings and data size: measuring is done
once per backbone, depth, resolution and host (core.finetune.cost_cache); changing the epochs or the
images only redoes the arithmetic.
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
from core.finetune.micro_batch import activation_bytes_per_image, even_slices, micro_batch_size
from core.finetune.tail import split_backbone
from core.models.loading import LoadedModel
from core.preprocessing import model_batch
from core.progress import Progress
from core.runtime import train_channels_last

SAMPLE_IMAGES = 8  # images decoded; they are repeated to fill a batch of the training's size
MAX_BATCH = 64  # the largest batch timed: lite0's frozen forward cost 29 ms an image at 32, 12 at 8
TIMED_RUNS = 2  # after one untimed run; the fastest is kept (a busy neighbour only ever adds time)

T = TypeVar("T")


@dataclass(frozen=True)
class DepthCost:
    """Seconds per image for one depth, measured on one batch, or why this depth cannot train here."""

    depth: str
    trainable_params: int = 0
    decode: float = 0.0  # reading and resizing one image (once per use: features, training images, validation)
    augment: float = 0.0  # crop, jitter and tensor conversion (images are decoded once)
    features: float = 0.0  # the whole frozen backbone at the model's own resolution
    prefix: float = 0.0  # the frozen prefix at the training resolution, no autograd
    step: float = 0.0  # the tail's forward + backward + optimiser step at the training resolution
    forward: float = 0.0  # the tail's forward without autograd at the training resolution
    scale: float = 1.0  # pixels at the model's own resolution / pixels at the training resolution
    prefix_bytes: int = 0  # one image's prefix output at the training resolution (what a view caches)
    has_prefix: bool = False  # a frozen part to skip by caching its outputs
    reason: str | None = None  # set when this depth cannot train this model


def _timed(work: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def _warm_timed(work: Callable[[], T]) -> tuple[float, T]:
    """The fastest of TIMED_RUNS runs of `work` after one untimed run, and the last result."""
    result = work()
    best = math.inf
    for _ in range(TIMED_RUNS):
        seconds, result = _timed(work)
        best = min(best, seconds)
    return best, result


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
    prefix_seconds, prefixed = _warm_timed(lambda: split.prefix(train_batch))
    cut_input = layout(prefixed)

    def tail(rows: slice) -> torch.Tensor:
        return head(split.tail(cut_input[rows], train_size))

    head.eval()
    split.eval()
    micro = micro_batch_size(activation_bytes_per_image(tail), n)  # as train() sizes its micro-batches

    def step() -> None:  # fine_tune()'s inner loop: micro-batches, their gradients summed, one optimiser step
        head.train()
        split.train(adapt_batchnorm=config.adapt_batchnorm)
        optimizer.zero_grad(set_to_none=True)
        for rows in even_slices(n, micro):
            loss = tail(rows).logsumexp(dim=1).mean() * ((rows.stop - rows.start) / n)
            loss.backward()
        optimizer.step()
        head.eval()
        split.eval()

    step_seconds, _ = _warm_timed(step)
    with torch.no_grad():
        forward_seconds, _ = _warm_timed(lambda: tail(slice(0, n)))
    return DepthCost(
        cut.depth,
        trainable_params=cut.trainable_params,
        decode=shared.decode,
        augment=shared.augment,
        features=shared.features,
        prefix=prefix_seconds / n,
        step=step_seconds / n,
        forward=forward_seconds / n,
        scale=shared.scale,
        prefix_bytes=prefixed[0].numel() * prefixed.element_size(),
        has_prefix=cut.start is None or bool(cut.prefix),
    )


def measure_costs(
    loaded: LoadedModel,
    items: Sequence[LabelledImage],
    config: TrainConfig,
    *,
    progress: Progress | None = None,
) -> dict[str, DepthCost]:
    """Per-image costs of every depth for `loaded`, timed on one batch of the training's batch size made of
    up to SAMPLE_IMAGES of `items` (repeated), each step in micro-batches as train() runs it.

    `progress` is called before each part; whatever it raises (a cancelled job) ends the measuring.
    """
    spec = loaded.spec
    train_size = resolve_train_size(spec, config.train_size)
    sample = list(items[:SAMPLE_IMAGES])
    if not sample:
        raise ZooScopeError("There are no images to time a training step on.")
    n = min(config.batch_size, MAX_BATCH)  # train() runs its batches at this size: so are they timed
    if progress:
        progress(0, len(DEPTHS) + 1, f"Timing one batch of {n} images through the frozen backbone")
    decode_seconds, decoded = _timed(lambda: [training_image(item, spec) for item in sample])
    images = [decoded[i % len(decoded)] for i in range(n)]
    augment = augmentation(spec, size=train_size, flip=config.flip, crop_scale=config.crop_scale)
    augment_seconds, batch = _warm_timed(lambda: augmented_batch(augment, images, seed=0))
    frozen = backbone_view(loaded).module
    eval_batch = model_batch(images, loaded.preprocess).to(loaded.device)
    with torch.no_grad():
        feature_seconds, _ = _warm_timed(lambda: frozen(eval_batch))
    shared = DepthCost(
        "head",
        decode=decode_seconds / len(decoded),
        augment=augment_seconds / n,
        features=feature_seconds / n,
        scale=(spec.input_size / train_size) ** 2,
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
    images whose frozen features are not in the FeatureCache yet (epoch 0, the head alone, needs them).

    The same steps as train() (core.finetune.deeper): the features of the uncached images; the training
    images decoded once; then, where the prefix's outputs are cached, `views` augmented views of each
    through the prefix and the validation images through it once, and each epoch the tail's training
    step on every training image and its forward on the validation images; where they are not cached,
    each epoch augments and runs the prefix afresh, and decodes the validation images again. Validation
    runs at the model's own resolution (`scale` times the pixels). The head's own epochs on the feature
    vectors (epoch 0) cost next to nothing and are left out.
    """
    if cost.reason is not None:
        return math.nan
    features = uncached * (cost.decode + cost.features)
    decoded = n_train * cost.decode
    micro_sizing = 3 * cost.forward  # one image, then two, through the tail with autograd
    val_tail = n_val * cost.forward * cost.scale
    cut_bytes = cost.prefix_bytes * (n_train * config.views + n_val * cost.scale)
    if caches_prefix(cost.has_prefix, int(cut_bytes)):
        inputs = config.views * n_train * (cost.augment + cost.prefix) + n_val * (
            cost.decode + cost.prefix * cost.scale
        )
        per_epoch = n_train * cost.step + val_tail
    else:
        inputs = 0.0
        per_epoch = (
            n_train * (cost.augment + cost.prefix + cost.step)
            + n_val * (cost.decode + cost.prefix * cost.scale)
            + val_tail
        )
    return features + decoded + micro_sizing + inputs + config.epochs * per_epoch
