""" "None of these": when a person's model is not sure enough, say so instead of naming a class.

A fine-tuned model only knows its own classes, and softmax always names one of them, even for a
photo of something else. The simplest guard that works is the maximum-softmax baseline (Hendrycks
and Gimpel, ICLR 2017): an answer whose top-1 probability is below a threshold reads
"not sure: low confidence".

The default threshold comes from the validation images the model never trained on: the 5th
percentile of the top-1 probability of those it classified correctly, so that 95% of right answers
on images like the training set still pass (the operating point that paper's benchmarks use). It is
bounded below by 1/C, chance for C classes (a threshold under chance would never fire), and above by
MAX_DEFAULT, so that a small, perfectly separated validation set (every right answer near 100%) does
not end up refusing most new photos of the classes; and rounded to a whole percent, as the pages show it.

A softmax is often confident about a photo of something else all the same: core.finetune.familiarity
adds the second test, "not sure: unlike the images it was trained on", and `answer` says which one fired.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from core.classify.predict import Classification, Failure, predictions_frame
from core.finetune.familiarity import NOT_SURE_UNLIKE, Familiarity, with_min_similarity
from core.finetune.metrics import Outcome

NOT_SURE = "not sure: low confidence"
NOT_SURE_ANSWERS = {"unlike_training": NOT_SURE_UNLIKE, "low_confidence": NOT_SURE}  # by Classification.not_sure_why
PASS_RATE = 0.95  # share of correctly classified validation images the default threshold lets through
MAX_DEFAULT = 0.9


def chance(num_classes: int) -> float:
    return 1.0 / max(num_classes, 1)


def default_threshold(outcomes: Sequence[Outcome], num_classes: int) -> float:
    """The threshold a trained model starts with, from its validation outcomes (see the module's docstring).

    Without a single correct validation answer there is nothing to learn it from: chance, which never fires.
    """
    floor = chance(num_classes)
    confidences = [o.confidence for o in outcomes if o.correct]
    if not confidences:
        return floor
    percentile = float(np.quantile(confidences, 1.0 - PASS_RATE))  # linear interpolation between ranks
    return round(min(max(percentile, floor), MAX_DEFAULT), 2)


def fallback_threshold(num_classes: int) -> float:
    """For a model without validation results (a bundle made before thresholds were stored):
    halfway between chance and certainty."""
    return round((chance(num_classes) + 1.0) / 2.0, 2)


def check_threshold(value: object) -> float:
    """A threshold as a float in [0, 1], or ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"threshold must be a number from 0 to 1, not {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"threshold must be from 0 to 1, not {value}")
    return float(value)


def passing_share(outcomes: Sequence[Outcome], threshold: float) -> float:
    """The share of correctly classified validation images whose answer reaches `threshold` (NaN if none)."""
    confidences = [o.confidence for o in outcomes if o.correct]
    if not confidences:
        return math.nan
    return sum(c >= threshold for c in confidences) / len(confidences)


def with_threshold(results: Sequence[Classification | Failure], threshold: float) -> list[Classification | Failure]:
    """The same results, each classification judged against `threshold` (failures as they are)."""
    return [
        dataclasses.replace(result, threshold=threshold) if isinstance(result, Classification) else result
        for result in results
    ]


def judge(
    results: Sequence[Classification | Failure], threshold: float, familiarity: Familiarity | None
) -> list[Classification | Failure]:
    """The same results judged at a model's thresholds as they are now (the pages' sliders move them)."""
    judged = with_threshold(results, threshold)
    return judged if familiarity is None else with_min_similarity(judged, familiarity.min_similarity)


def answer(result: Classification) -> str:
    """The top-1 label, or why it is not sure: unlike the training images (core.finetune.familiarity), or
    NOT_SURE when the result's top-1 probability is below its threshold."""
    why = result.not_sure_why
    return result.top1.label if why is None else NOT_SURE_ANSWERS[why]


def answers(results: Sequence[Classification | Failure]) -> list[str]:
    """One answer per result, in order: the label or why not sure; '' for a file that could not be classified."""
    return [answer(result) if isinstance(result, Classification) else "" for result in results]


def predictions_with_threshold(results: Sequence[Classification | Failure], threshold: float) -> pd.DataFrame:
    """predictions_frame (every top-k row) with the threshold, whether each image is below it, and whether
    (and why) its answer is "not sure"."""
    frame = predictions_frame(results)
    judged = with_threshold(results, threshold)
    rows = [r for r in judged if isinstance(r, Classification) for _ in r.predictions]
    return frame.assign(
        threshold=threshold,
        below_threshold=[r.below_threshold for r in rows],
        not_sure=[r.not_sure_why is not None for r in rows],
        not_sure_why=[r.not_sure_why for r in rows],
    )
