"""Validation results of a trained model: accuracy, per-class precision/recall/F1, confusion, each image's outcome."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import pandas as pd
import torch

from core.datasets.labelled import LabelledImage


class Outcome(NamedTuple):
    """One validation image: its class, the model's top-1 and the probability given to it."""

    item: LabelledImage
    true: str
    predicted: str
    confidence: float  # the probability given to `predicted` (the top-1 probability)

    @property
    def correct(self) -> bool:
        return self.true == self.predicted


@dataclass(frozen=True, eq=False)
class Metrics:
    """Validation results of a trained model."""

    accuracy: float
    per_class: pd.DataFrame  # class, precision, recall, f1, support
    confusion: pd.DataFrame  # long form: true, predicted, count (every pair, zeros included)
    outcomes: list[Outcome]  # every validation image, in validation order

    def per_class_frame(self) -> pd.DataFrame:
        return self.per_class.copy()

    def confusion_frame(self) -> pd.DataFrame:
        return self.confusion.copy()

    @property
    def mistakes(self) -> list[Outcome]:
        """The misclassified images, most confident first: the mistakes worth looking at first."""
        return sorted((o for o in self.outcomes if not o.correct), key=lambda o: -o.confidence)

    def in_cell(self, true: str, predicted: str) -> list[Outcome]:
        """The validation images behind one confusion-matrix cell (true class, predicted class).

        Off the diagonal these are mistakes, most confident first (the same order as `mistakes`).
        On it they are the images classified correctly, least confident first: the near misses,
        which say more about the class than the easy ones.
        """
        members = [o for o in self.outcomes if o.true == true and o.predicted == predicted]
        sign = 1 if true == predicted else -1
        return sorted(members, key=lambda o: sign * o.confidence)

    def cells(self) -> list[tuple[str, str, int]]:
        """Every non-empty confusion cell as (true, predicted, count): mistakes first, most frequent first,
        then the diagonal in class order."""
        rows = [(r.true, r.predicted, int(r.count)) for r in self.confusion.itertuples(index=False) if r.count > 0]
        wrong = sorted((row for row in rows if row[0] != row[1]), key=lambda row: -row[2])
        return wrong + [row for row in rows if row[0] == row[1]]

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
    """Accuracy, per-class precision/recall/F1/support, confusion counts and every image's outcome.

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
    outcomes = [
        Outcome(item, classes[int(t)], classes[int(p)], float(c))
        for item, t, p, c in zip(val_items, targets, predicted, confidence, strict=True)
    ]
    return Metrics(
        accuracy=float(correct.sum() / total) if total else float("nan"),
        per_class=per_class,
        confusion=confusion,
        outcomes=outcomes,
    )
