"""Training settings, checked when made, and what each epoch leaves behind."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Generic, TypeVar, overload

from core.errors import ZooScopeError
from core.features.stages import PENULTIMATE
from core.finetune.depth import DEPTHS
from core.finetune.heads import HEAD_TYPES

MODES = ("fast", "finetune", "scratch")
MIN_TRAIN_SIZE = 64

# What a setting left as None means in each mode. Fine-tuning follows timm's and fastai's recipes:
# label smoothing, AdamW with weight decay, fewer (dearer) epochs, and a schedule run to its end (its
# decay is where the validation loss settles, so patience does not cut it short; the best epoch is kept).
# bench/bench_finetune.py measures these against a linear probe.
MODE_DEFAULTS = {
    "fast": {"epochs": 30, "label_smoothing": 0.0, "weight_decay": 1e-4, "patience": 5},
    "finetune": {"epochs": 8, "label_smoothing": 0.1, "weight_decay": 0.01, "patience": 8},
    # The baseline (core.finetune.scratch): its time budget, not its epochs, ends it; random weights take
    # timm's from-scratch weight decay. Patience stays under the page's limit of 100.
    "scratch": {"epochs": 200, "label_smoothing": 0.1, "weight_decay": 0.05, "patience": 50},
}

T = TypeVar("T")


class ModeDefault(Generic[T]):
    """A TrainConfig setting given as `T | None` (None: the mode's default) and read as `T`: __post_init__
    puts the default in before anyone reads it, so readers never check for None."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, config: None, owner: type) -> None: ...  # the class's default (dataclass reads it)
    @overload
    def __get__(self, config: object, owner: type) -> T: ...
    def __get__(self, config: object, owner: type) -> T | None:
        return None if config is None else config.__dict__[self.name]

    def __set__(self, config: object, value: T | None) -> None:
        config.__dict__[self.name] = value


@dataclass(frozen=True)
class TrainConfig:
    """How to train. "fast": a new head on frozen, cached features. "finetune": that head first,
    then `unfreeze` (last block, last half, whole network; or the head only, on augmented images)
    trains with it: discriminative learning rates, a linear warm-up then cosine decay (timm's).
    "scratch": the baseline, the whole network from random weights on the same augmented images,
    for `time_budget_s` (core.finetune.scratch)."""

    mode: str = "fast"
    head: str = "linear"  # "linear" or "mlp"
    # ModeDefault: None (the default) is the mode's own value (MODE_DEFAULTS).
    epochs: ModeDefault[int] = ModeDefault()  # at most (early stopping may end sooner)
    lr: float = 1e-3  # the head's learning rate (AdamW), and the peak of the schedule in finetune mode
    batch_size: int = 32
    weight_decay: ModeDefault[float] = ModeDefault()  # AdamW's decoupled weight decay
    label_smoothing: ModeDefault[float] = ModeDefault()
    patience: ModeDefault[int] = ModeDefault()  # epochs without a lower validation loss before stopping
    val_fraction: float = 0.2
    seed: int = 0
    hidden: int = 256  # mlp head only
    dropout: float = 0.2  # mlp head only
    # finetune mode only:
    unfreeze: str = "half"  # core.finetune.depth.DEPTHS
    body_lr: float = 0.5  # the last trainable stage's learning rate, as a share of `lr`
    layer_decay: float = 1.0  # each earlier stage's learning rate, as a share of the next one's
    warmup: float = 0.125  # the share of the steps spent warming up linearly, before the cosine decay
    head_epochs: int = 20  # the head alone on frozen features first (at most; early stopping applies)
    adapt_batchnorm: bool = False  # let batch-norm statistics follow the new images (in the person's copies)
    flip: bool = False  # random horizontal flips (wrong where orientation matters: a mirrored 2 is not a 2)
    train_size: int | None = None  # training resolution; None: the model's own (evaluation is always at its own)
    crop_scale: float = 0.6  # random resized crops keep at least this share of the image's area
    views: int = 4  # augmented views per image whose frozen-part outputs are computed once and reused
    # scratch mode only: seconds of training, the epoch that crosses it the last (None: `epochs` alone)
    time_budget_s: float | None = None
    # fast mode only: the stage end whose pooled features the head reads, the network cut there
    # (core.features.cut); None or PENULTIMATE: the layer before the classifier, as Classify uses
    features_from: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.mode not in MODES:
            problems.append(f"mode must be one of {', '.join(MODES)}, not '{self.mode}'")
        else:
            for name, value in MODE_DEFAULTS[self.mode].items():
                if getattr(self, name) is None:
                    object.__setattr__(self, name, value)
        if self.head not in HEAD_TYPES:
            problems.append(f"head must be one of {', '.join(HEAD_TYPES)}, not '{self.head}'")
        if self.unfreeze not in DEPTHS:
            problems.append(f"unfreeze must be one of {', '.join(DEPTHS)}, not '{self.unfreeze}'")
        for name in ("epochs", "batch_size", "patience", "hidden", "head_epochs", "views"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{name} must be a whole number of at least 1")
        for name in ("lr", "body_lr", "layer_decay"):
            if not _number(getattr(self, name)) or not getattr(self, name) > 0:
                problems.append(f"{name} must be positive")
        if not _number(self.weight_decay) or not self.weight_decay >= 0:
            problems.append("weight_decay must not be negative")
        if not _number(self.warmup) or not 0.0 < self.warmup < 1.0:
            problems.append("warmup must be between 0 and 1 (a share of the steps)")
        if not _number(self.crop_scale) or not 0.0 < self.crop_scale <= 1.0:
            problems.append("crop_scale must be above 0 and at most 1")
        for name in ("label_smoothing", "dropout"):
            if not _number(getattr(self, name)) or not 0.0 <= getattr(self, name) < 1.0:
                problems.append(f"{name} must be at least 0 and below 1")
        if not _number(self.val_fraction) or not 0.0 < self.val_fraction < 1.0:
            problems.append("val_fraction must be between 0 and 1")
        for name in ("adapt_batchnorm", "flip"):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name} must be true or false")
        budget = self.time_budget_s
        if budget is not None and (not _number(budget) or not 0 < budget < float("inf")):
            problems.append("time_budget_s must be a positive number of seconds")
        size = self.train_size
        if size is not None and (not _whole(size) or size < MIN_TRAIN_SIZE):
            problems.append(f"train_size must be a whole number of pixels, at least {MIN_TRAIN_SIZE}")
        stage: object = self.features_from  # a bundle's JSON may hold anything
        if stage is not None and not isinstance(stage, str):
            problems.append("features_from must be a stage's name")
        elif stage not in (None, PENULTIMATE) and self.mode != "fast":
            problems.append(
                f"features_from ('{self.features_from}') is for fast mode only: {self.mode} mode trains "
                "the network past that stage"
            )
        if problems:
            raise ZooScopeError("Invalid training settings: " + "; ".join(problems) + ".")

    @property
    def depth(self) -> str:
        """How much of the backbone trains: always "head" in fast mode, "all" from scratch."""
        return {"fast": "head", "scratch": "all"}.get(self.mode, self.unfreeze)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class EpochLog:
    """One epoch. In finetune mode, epoch 0 is the head trained alone on frozen features."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    seconds: float
    images_per_second: float = float("nan")  # training images through the trainable part per second
