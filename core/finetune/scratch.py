"""The from-scratch baseline: what ImageNet pre-training buys, measured on a person's own images.

The same architecture with its own random initialisation (`spec.build()`: torchvision's, or timm's for
the bundled EfficientNet-Lite), every parameter trained with a new head on the same augmented images as
finetune mode, through the same epochs (core.finetune.deeper.train_tail), for a time budget: by default
the time a fine-tuned run on the same images took, so that the two compare at equal cost (He et al.
2019, "Rethinking ImageNet pre-training": from scratch catches up only given much more time and data).

Where it differs from finetune mode, each time because the weights are random:
- no epoch 0 (the head alone on frozen features): random features are worth nothing to a head;
- one learning rate for every layer (no discriminative rates): early layers hold nothing to preserve;
- every module in training mode: batch-norm statistics, dropout and stochastic depth learn from these
  images, since there are no ImageNet statistics to keep;
- the schedule (linear warm-up, cosine decay) follows whichever is further along, the steps or the time
  budget, and the epoch that crosses the budget is the last.

The best validation loss's state is kept, as in the other modes. Its trained modules are the whole
network, so a bundle carries every one of them. Tensors held by the network's root module itself (ViT's
class token: one vector) are not among them and stay the shared model's.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from core import runtime
from core.finetune.augment import global_rng_seeded
from core.finetune.config import EpochLog, TrainConfig
from core.finetune.deeper import TailInputs, TailRecipe, finetune_optimizer, train_tail
from core.finetune.depth import Cut
from core.finetune.epochs import Labels, Outcome
from core.finetune.tail import split_backbone
from core.finetune.trained import TrainedModel
from core.models.catalog import ModelSpec
from core.models.family_paths import get_layer
from core.models.loading import LoadedModel
from core.progress import Progress
from core.runtime import train_channels_last

# The budget where no fine-tuned run gives one (the CLI's --seconds default): a few epochs of a small
# network on a few hundred images on two cores.
DEFAULT_BUDGET_S = 120.0


def random_copies(spec: ModelSpec, paths: Sequence[str], *, seed: int) -> dict[str, nn.Module]:
    """The modules at `paths` of `spec`'s architecture with its own random initialisation, the same for a seed."""
    # Builders run nn.init, which draws from torch's global generator and edits its tracing state.
    with runtime.TORCH_GLOBAL_STATE, global_rng_seeded(seed):
        model = spec.build()
    return {path: get_layer(model, path, spec.name) for path in paths}


def budget_schedule(steps: int, warmup: float, budget_s: float | None, started: float) -> Callable[[int], float]:
    """Warm-up then cosine decay (deeper.warmup_cosine's) over whichever is further along: `steps`, or the
    time left of `budget_s` (counted from `started`) when the schedule is first asked, at step 0. Where
    nothing was left by then (the work before the first step took it all), the steps alone: that one
    epoch still runs."""
    clock: list[float] = []  # [when step 0 came, the seconds left then]

    def done_share(step: int) -> float:
        done = step / steps
        if budget_s is not None:
            now = time.perf_counter()
            if not clock:
                clock.extend((now, budget_s - (now - started)))
            if step > 0 and clock[1] > 0:
                done = max(done, (now - clock[0]) / clock[1])
        return min(done, 1.0)

    def schedule(step: int) -> float:
        done = done_share(step)
        if done < warmup:
            return (done * steps + 1) / (warmup * steps + 1)
        return 0.5 * (1.0 + math.cos(math.pi * (done - warmup) / (1.0 - warmup)))

    return schedule


def from_scratch(
    loaded: LoadedModel,
    cut: Cut,
    train_size: int,
    labels: Labels,
    config: TrainConfig,
    generator: torch.Generator,
    outcome: Outcome,
    *,
    on_epoch: Callable[[EpochLog], None] | None,
    progress: Progress | None,
    should_stop: Callable[[], bool] | None,
) -> TrainedModel:
    """Scratch mode: random copies of every module of the network (`cut`, depth "all") train with the head
    for `config.time_budget_s` (or `config.epochs`, whichever ends first); the best state as the model."""
    device = loaded.device
    dtype = next(loaded.module.parameters()).dtype
    channels_last = train_channels_last(loaded.spec.traits, device)
    copies = {
        path: module.to(device=device, dtype=dtype)
        for path, module in random_copies(loaded.spec, cut.tuned, seed=config.seed).items()
    }
    prepare = (lambda m: m.to(memory_format=torch.channels_last)) if channels_last else (lambda m: m)
    split = outcome.split = split_backbone(loaded, cut, prepare=prepare, copies=copies)
    budget = config.time_budget_s

    def train_mode() -> None:
        for module in split.tuned.values():
            module.train()

    def out_of_time() -> bool:
        return budget is not None and time.perf_counter() - outcome.started >= budget

    def report(log: EpochLog) -> None:
        if on_epoch:
            on_epoch(log)
        if progress:
            elapsed = time.perf_counter() - outcome.started
            speed = f"{log.images_per_second:,.0f} images/s"
            score = f"validation loss {log.val_loss:.3f}, accuracy {log.val_acc:.1%} · {speed}"
            if budget is None:
                progress(log.epoch, config.epochs, f"Epoch {log.epoch} of {config.epochs} from scratch: {score}")
            else:
                total = max(1, math.ceil(budget))
                progress(
                    min(math.floor(elapsed), total),
                    total,
                    f"Epoch {log.epoch} from scratch, {elapsed:.0f} of {budget:.0f} s: {score}",
                )

    steps = config.epochs * math.ceil(len(labels.train_items) / config.batch_size)
    recipe = TailRecipe(
        # One learning rate for every layer: the head's.
        optimizer=finetune_optimizer(outcome.head, split, dataclasses.replace(config, body_lr=1.0, layer_decay=1.0)),
        schedule=budget_schedule(steps, config.warmup, budget, outcome.started),
        train_mode=train_mode,
        out_of_time=out_of_time,
    )
    inputs = TailInputs(loaded, split, labels, config, train_size, channels_last, progress)
    return train_tail(inputs, config, generator, outcome, recipe, report=report, should_stop=should_stop)
