"""A learning-rate finder (fastai's `lr_find`, after Leslie Smith's range test) for the new head.

A fresh head trains on the frozen, cached features (the ones fast mode and finetune mode's first
epoch use) while its learning rate grows exponentially from `start` to `end`, one step per batch;
the loss, smoothed, is recorded against the rate until it blows up. The suggestion is fastai's
default, "valley": in the longest stretch where the loss keeps falling, a point about half-way down
(where it falls fastest and training is still stable). In finetune mode the head's rate sets the
tail's too (discriminative rates are shares of it), the way fastai's `fine_tune` takes one base
rate from `lr_find` on the frozen model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn as nn

from core.datasets.labelled import Dataset, stratified_split
from core.errors import ZooScopeError
from core.features.backbone import backbone_view
from core.finetune.config import TrainConfig
from core.finetune.extraction import FeatureCache, extract_features
from core.finetune.heads import build_head
from core.models.loading import LoadedModel
from core.progress import Progress

SMOOTHING = 0.98  # fastai's exponential moving average of the loss
DIVERGED = 4.0  # stop once the smoothed loss is this many times its minimum


@dataclass(frozen=True)
class LRFinding:
    frame: pd.DataFrame  # lr, loss (smoothed), one row per step
    suggestion: float


def find_lr(
    loaded: LoadedModel,
    dataset: Dataset,
    config: TrainConfig,
    *,
    cache: FeatureCache | None = None,
    progress: Progress | None = None,
    start: float = 1e-6,
    end: float = 10.0,
    steps: int = 100,
) -> LRFinding:
    """Loss against learning rate for a new head on `dataset`'s training split, and a suggested rate."""
    if not 0 < start < end or steps < 2:
        raise ValueError("the learning-rate range needs 0 < start < end and at least 2 steps")
    dataset.validate()
    train_items, _ = stratified_split(dataset.items, val_fraction=config.val_fraction, seed=config.seed)
    if not train_items:
        raise ZooScopeError("There are too few images to find a learning rate: add more images to each class.")
    index_of = {label: i for i, label in enumerate(dataset.classes)}
    targets = torch.tensor([index_of[item.label] for item in train_items])
    view = backbone_view(loaded)
    features = extract_features(
        view.module, loaded.preprocess, train_items, backbone=loaded.spec.slug, cache=cache, progress=progress
    ).to(loaded.device)
    generator = torch.Generator().manual_seed(config.seed)
    classes = len(dataset.classes)
    head = build_head(
        config.head, view.feature_dim, classes, hidden=config.hidden, dropout=config.dropout, generator=generator
    ).to(loaded.device)
    optimizer = torch.optim.AdamW(head.parameters(), lr=start, weight_decay=config.weight_decay)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    growth = (end / start) ** (1 / (steps - 1))

    def batches():
        while True:
            yield from torch.randperm(len(train_items), generator=generator).split(config.batch_size)

    rows, average, lowest = [], 0.0, math.inf
    head.train()
    for step, indices in zip(range(steps), batches(), strict=False):
        lr = start * growth**step
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = criterion(head(features[indices]), targets[indices].to(loaded.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            break
        average = SMOOTHING * average + (1 - SMOOTHING) * value
        smoothed = average / (1 - SMOOTHING ** (step + 1))  # bias-corrected, as fastai does
        rows.append({"lr": lr, "loss": smoothed})
        lowest = min(lowest, smoothed)
        if progress:
            progress(step + 1, steps, f"Trying learning rate {lr:.1e}: loss {smoothed:.3f}")
        if step > 0 and smoothed > DIVERGED * lowest:
            break
    frame = pd.DataFrame(rows, columns=["lr", "loss"])
    return LRFinding(frame=frame, suggestion=float(frame["lr"].iloc[valley(frame["loss"].tolist())]))


def valley(losses: list[float]) -> int:
    """fastai's `valley`: the index half-way down the longest run of falling losses (not necessarily
    adjacent points: a longest decreasing subsequence), a third and a half of a third in."""
    longest = [1] * len(losses)
    start = end = 0
    for i in range(1, len(losses)):
        for j in range(i):
            if losses[i] < losses[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
        if longest[end] < longest[i]:
            end = i
            start = end - longest[end]
    third = (end - start) / 3
    return min(len(losses) - 1, start + int(third) + int(third / 2))
