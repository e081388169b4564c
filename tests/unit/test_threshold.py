"""core.finetune.threshold: the "not sure" threshold, chosen from validation outcomes and applied to answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.classify.predict import Classification, Failure, Prediction
from core.datasets.labelled import LabelledImage
from core.finetune.metrics import Outcome
from core.finetune.threshold import (
    MAX_DEFAULT,
    NOT_SURE,
    answer,
    answers,
    check_threshold,
    default_threshold,
    fallback_threshold,
    passing_share,
    predictions_with_threshold,
    with_threshold,
)


def outcome(confidence: float, *, correct: bool = True) -> Outcome:
    item = LabelledImage("a", f"{confidence}.png", str(confidence).encode())
    return Outcome(item, "a", "a" if correct else "b", confidence)


def classified(file: str, top1: float, second: float | None = None) -> Classification:
    second = 1.0 - top1 if second is None else second
    predictions = (Prediction(1, "cat", top1, 0), Prediction(2, "dog", second, 1))
    return Classification(file=file, model="my model", predictions=predictions, latency_ms=1.0)


# --- the default ----------------------------------------------------------------------------------


def test_default_is_the_5th_percentile_of_correct_answers_rounded_to_a_percent():
    confidences = [0.5 + 0.02 * i for i in range(20)]  # 0.50 .. 0.88, all correct
    wrong = [outcome(0.99, correct=False), outcome(0.2, correct=False)]  # mistakes do not count
    expected = float(np.quantile(confidences, 0.05))  # 0.519
    chosen = default_threshold([outcome(c) for c in confidences] + wrong, num_classes=2)
    assert chosen == round(expected, 2) == 0.52
    # 95% of the correct validation answers pass it, by construction.
    assert passing_share([outcome(c) for c in confidences], chosen) == pytest.approx(0.95)


def test_default_is_capped_so_a_perfect_validation_set_does_not_refuse_new_photos():
    assert default_threshold([outcome(c) for c in (0.97, 0.99, 0.999, 1.0)], num_classes=3) == MAX_DEFAULT


def test_default_never_goes_below_chance():
    # A weak 3-class model whose right answers are near chance: the percentile (0.30) is under 1/3.
    assert default_threshold([outcome(0.30), outcome(0.9)], num_classes=3) == pytest.approx(0.33)


def test_without_a_correct_answer_the_default_is_chance_which_never_fires():
    chosen = default_threshold([outcome(0.8, correct=False)], num_classes=4)
    assert chosen == 0.25
    assert not with_threshold([classified("x.png", 0.25, 0.25)], chosen)[0].below_threshold


def test_fallback_is_halfway_between_chance_and_certainty():
    assert fallback_threshold(2) == 0.75
    assert fallback_threshold(10) == 0.55


@pytest.mark.parametrize("value", [-0.1, 1.5, math.nan, math.inf, "0.5", True, None])
def test_check_threshold_refuses_what_is_not_a_probability(value):
    with pytest.raises(ValueError, match="threshold must"):
        check_threshold(value)


def test_check_threshold_accepts_the_ends():
    assert check_threshold(0) == 0.0 and check_threshold(1) == 1.0


def test_passing_share_without_correct_answers_is_nan():
    assert math.isnan(passing_share([outcome(0.9, correct=False)], 0.5))


# --- applying it ----------------------------------------------------------------------------------


def test_below_the_threshold_the_answer_is_not_sure():
    results = with_threshold([classified("low.png", 0.49), classified("at.png", 0.5), Failure("bad.png", "no")], 0.5)
    low, at, failure = results
    assert low.below_threshold and answer(low) == NOT_SURE
    assert not at.below_threshold and answer(at) == "cat"  # at the threshold is enough
    assert failure == Failure("bad.png", "no")
    assert answers(results) == [NOT_SURE, "cat", ""]


def test_without_a_threshold_nothing_is_below_and_json_is_unchanged():
    plain = classified("x.png", 0.01, 0.0)
    assert not plain.below_threshold
    assert set(plain.as_json()) == {"file", "model", "predictions", "latency_ms"}


def test_json_carries_the_threshold_and_the_verdict():
    (judged,) = with_threshold([classified("x.png", 0.6)], 0.7)
    report = judged.as_json()
    assert report["threshold"] == 0.7 and report["below_threshold"] is True
    assert [p["label"] for p in report["predictions"]] == ["cat", "dog"]  # the guess is still there


def test_a_new_threshold_replaces_the_old_one():
    (judged,) = with_threshold(with_threshold([classified("x.png", 0.6)], 0.7), 0.5)
    assert judged.threshold == 0.5 and not judged.below_threshold


def test_predictions_with_threshold_marks_every_row_of_each_image():
    frame = predictions_with_threshold(
        [classified("a.png", 0.9), Failure("b.png", "no"), classified("c.png", 0.6)], 0.7
    )
    assert frame["file"].tolist() == ["a.png", "a.png", "c.png", "c.png"]
    assert frame["below_threshold"].tolist() == [False, False, True, True]
    assert set(frame["threshold"]) == {0.7}
