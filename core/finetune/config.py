"""Training settings, checked when made, and what each epoch leaves behind."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from core.errors import ZooScopeError
from core.finetune.heads import HEAD_TYPES

MODES = ("fast", "finetune")


@dataclass(frozen=True)
class TrainConfig:
    mode: str = "fast"  # "fast": frozen backbone, cached features; "finetune": also the last block
    head: str = "linear"  # "linear" or "mlp"
    epochs: int = 30
    lr: float = 1e-3  # the head's learning rate (AdamW)
    block_lr: float = 1e-4  # the copied last block's learning rate (finetune mode)
    batch_size: int = 32
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    patience: int = 5  # epochs without a lower validation loss before stopping
    val_fraction: float = 0.2
    seed: int = 0
    hidden: int = 256  # mlp head only
    dropout: float = 0.2  # mlp head only

    def __post_init__(self) -> None:
        problems = []
        if self.mode not in MODES:
            problems.append(f"mode must be one of {', '.join(MODES)}, not '{self.mode}'")
        if self.head not in HEAD_TYPES:
            problems.append(f"head must be one of {', '.join(HEAD_TYPES)}, not '{self.head}'")
        for name in ("epochs", "batch_size", "patience", "hidden"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                problems.append(f"{name} must be a whole number of at least 1")
        for name in ("lr", "block_lr"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be positive")
        if not self.weight_decay >= 0:
            problems.append("weight_decay must not be negative")
        for name in ("label_smoothing", "dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                problems.append(f"{name} must be at least 0 and below 1")
        if not 0.0 < self.val_fraction < 1.0:
            problems.append("val_fraction must be between 0 and 1")
        if problems:
            raise ZooScopeError("Invalid training settings: " + "; ".join(problems) + ".")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class EpochLog:
    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    seconds: float
