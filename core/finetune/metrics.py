"""Validation results of a trained model: accuracy, per-class precision/recall/F1, confusion, mistakes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import pandas as pd
import torch

from core.finetune.data import LabelledImage


class Mistake(NamedTuple):
    item: LabelledImage
    true: str
    predicted: str
    confidence: float  # the probability given to `predicted`


@dataclass(frozen=True, eq=False)
class Metrics:
    """Validation results of a trained model."""

    accuracy: float
    per_class: pd.DataFrame  # class, precision, recall, f1, support
    confusion: pd.DataFrame  # long form: true, predicted, count (every pair, zeros included)
    mistakes: list[Mistake]  # most confident first

    def per_class_frame(self) -> pd.DataFrame:
        return self.per_class.copy()

    def confusion_frame(self) -> pd.DataFrame:
        return self.confusion.copy()

    @property
    def macro_f1(self) -> float:
        return float(self.per_class["f1"].mean()) if len(self.per_class) else float("nan")


def _safe_ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    return torch.where(denominator > 0, numerator / denominator.clamp(min=1), torch.zeros_like(numerator))


def evaluate(
    probabilities: torch.Tensor,
    targets: torch.Tensor,
    classes: Sequence[str],
    val_items: Sequence[LabelledImage],
) -> Metrics:
    """Accuracy, per-class precision/recall/F1/support, confusion counts and mistakes.

    A class never predicted has precision 0; a class absent from the targets has recall 0 and
    support 0 (the usual zero-division convention).
    """
    num_classes = len(classes)
    targets = targets.long().cpu()
    confidence, predicted = probabilities.float().cpu().max(dim=1)
    counts = torch.bincount(targets * num_classes + predicted, minlength=num_classes * num_classes)
    matrix = counts.reshape(num_classes, num_classes).double()  # [true, predicted]
    correct = matrix.diagonal()
    support = matrix.sum(dim=1)
    predicted_totals = matrix.sum(dim=0)
    precision = _safe_ratio(correct, predicted_totals)
    recall = _safe_ratio(correct, support)
    f1 = _safe_ratio(2 * precision * recall, precision + recall)
    total = len(targets)
    per_class = pd.DataFrame(
        {
            "class": list(classes),
            "precision": precision.tolist(),
            "recall": recall.tolist(),
            "f1": f1.tolist(),
            "support": support.long().tolist(),
        }
    )
    confusion = pd.DataFrame(
        [
            {"true": classes[t], "predicted": classes[p], "count": int(matrix[t, p])}
            for t in range(num_classes)
            for p in range(num_classes)
        ],
        columns=["true", "predicted", "count"],
    )
    wrong = (predicted != targets).nonzero().flatten().tolist()
    mistakes = sorted(
        (
            Mistake(val_items[i], classes[int(targets[i])], classes[int(predicted[i])], float(confidence[i]))
            for i in wrong
        ),
        key=lambda mistake: -mistake.confidence,
    )
    return Metrics(
        accuracy=float(correct.sum() / total) if total else float("nan"),
        per_class=per_class,
        confusion=confusion,
        mistakes=mistakes,
    )
