"""The epochs and what they leave: the labels both modes train on, the best state so far (what
train() returns, or hands over when interrupted), one epoch's log and validation, and the head's
epochs on fixed feature vectors (fast mode, and finetune mode's epoch 0)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.datasets.labelled import LabelledImage
from core.finetune.config import EpochLog, TrainConfig
from core.finetune.heads import InputScale
from core.finetune.metrics import evaluate
from core.finetune.tail import SplitBackbone
from core.finetune.threshold import default_threshold
from core.finetune.trained import TrainedModel
from core.jobs.queue import give_way
from core.models.loading import LoadedModel


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@dataclass
class Labels:
    """The classes, the split, and each image's class index, for both stages."""

    classes: list[str]
    train_items: list[LabelledImage]
    val_items: list[LabelledImage]
    y_train: torch.Tensor
    y_val: torch.Tensor


class Outcome:
    """The epochs so far and the best state among them: what train() returns, or hands over when interrupted."""

    def __init__(self, loaded: LoadedModel, config: TrainConfig, labels: Labels, head: nn.Module, started: float):
        self.loaded, self.config, self.labels, self.head, self.started = loaded, config, labels, head, started
        self.split: SplitBackbone | None = None
        self.history: list[EpochLog] = []
        self.best_loss, self.best_epoch = math.inf, 0
        self.best_head: dict[str, torch.Tensor] | None = None
        self.best_tuned: dict | None = None  # None: the shared backbone as it is
        self.best_probs: torch.Tensor | None = None
        # Fast mode from a middle stage trains on standardised features; the kept head reads raw ones.
        self.input_scale: InputScale | None = None

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
        if self.best_head is None or self.best_probs is None:
            raise RuntimeError("no epoch has finished yet: there is no model to keep")
        self.head.load_state_dict(self.best_head)
        self.head.eval().requires_grad_(False)
        head = self.input_scale.folded(self.head) if self.input_scale is not None else self.head
        tuned: dict[str, nn.Module] = {}
        if self.best_tuned is not None and self.split is not None:
            self.split.load_state(self.best_tuned)
            self.split.eval()
            tuned = {path: module.requires_grad_(False) for path, module in self.split.tuned.items()}
        metrics = evaluate(self.best_probs, self.labels.y_val, self.labels.classes, self.labels.val_items)
        return TrainedModel(
            backbone=spec.name,
            weights_id=spec.weights_id,
            classes=self.labels.classes,
            config=self.config,
            head=head,
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


def epoch_log(
    epoch: int,
    labels: Labels,
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


def validation(head: nn.Module, features: torch.Tensor, y_val: torch.Tensor) -> tuple[float, float, torch.Tensor]:
    """(loss, accuracy, probabilities) of the head on validation features."""
    with torch.inference_mode():
        logits = head(features).float().cpu()
        probs = logits.softmax(dim=1)
        return float(F.cross_entropy(logits, y_val)), float((probs.argmax(dim=1) == y_val).float().mean()), probs


class BestHead:
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

    def best(self) -> tuple[EpochLog, torch.Tensor, dict[str, torch.Tensor]]:
        """(log, probabilities, head state) of the best epoch; at least one epoch must have run."""
        if self.log is None or self.probs is None or self.state is None:
            raise RuntimeError("the head has not finished an epoch yet")
        return self.log, self.probs, self.state


def fit_head(
    head: nn.Module,
    train_features: torch.Tensor,
    val_features: torch.Tensor,
    labels: Labels,
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
            give_way()  # a visitor's short work goes first (core.jobs.queue)
            logits = head(train_features[indices.to(device)])
            targets = labels.y_train[indices].to(device)
            loss = criterion(logits, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += float(loss.detach()) * len(indices)
            total_correct += int((logits.detach().argmax(dim=1) == targets).sum())
        head.eval()
        val_loss, val_acc, probs = validation(head, val_features, labels.y_val)
        seconds = time.perf_counter() - start
        log = epoch_log(epoch, labels, total_loss, total_correct, val_loss, val_acc, seconds, train_seconds=seconds)
        improved = record(log, probs)  # before the callbacks, so that an interruption there keeps this epoch too
        best_epoch = epoch if improved else best_epoch
        report(log)
        if not improved and epoch - best_epoch >= config.patience:
            return True, False
        if should_stop is not None and should_stop():
            return False, epoch < epochs
    return False, False
