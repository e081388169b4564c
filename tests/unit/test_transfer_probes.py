"""core.features.probes on synthetic stage features: the separable stage wins, every stage is scored on the
same folds, ties go to the later stage, and sets that cannot be cross-validated are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.features.probes import (
    ProbeError,
    ProbeResult,
    StageScore,
    check_labels,
    fold_splits,
    lesson,
    probe_stages,
    transfer_json,
)
from core.features.stages import PENULTIMATE, StageFeatures, StagePoint


def synthetic(columns: dict[str, np.ndarray], failures: tuple = ()) -> StageFeatures:
    names = list(columns)
    points = tuple(
        StagePoint(name=name, index=index, count=len(names), layout="nchw", dim=columns[name].shape[1])
        for index, name in enumerate(names)
    )
    features = {name: torch.from_numpy(values.astype(np.float32)) for name, values in columns.items()}
    return StageFeatures("synthetic", points, features, failures)


def labels_of(classes: int, per_class: int) -> list[str]:
    return [f"class {c}" for c in range(classes) for _ in range(per_class)]


def separable(labels: list[str], dim: int, rng: np.random.Generator) -> np.ndarray:
    """Noise plus a clear class signal in the first columns."""
    codes = np.array([int(label.split()[-1]) for label in labels])
    values = rng.normal(size=(len(labels), dim))
    values[np.arange(len(labels)), codes % dim] += 6.0
    return values


def test_the_separable_stage_is_best_and_noise_stays_near_chance():
    rng = np.random.default_rng(0)
    labels = labels_of(3, 10)
    found = synthetic(
        {
            "early": rng.normal(size=(30, 8)),
            "middle": separable(labels, 16, rng),
            "late": rng.normal(size=(30, 32)),
            PENULTIMATE: rng.normal(size=(30, 64)),
        }
    )
    result = probe_stages(found, labels)
    scores = {score.stage: score for score in result.stages}
    assert [score.stage for score in result.stages] == ["early", "middle", "late", PENULTIMATE]
    assert result.best.stage == "middle"
    assert scores["middle"].accuracy >= 0.9
    assert scores["late"].accuracy < 0.7 and scores[PENULTIMATE].accuracy < 0.7
    assert result.folds == 5 and result.images == 30 and result.classes == 3
    assert [score.dim for score in result.stages] == [8, 16, 32, 64]
    assert [score.relative_depth for score in result.stages] == [0.25, 0.5, 0.75, 1.0]
    assert "middle" in lesson(result) and "beats the penultimate layer by" in lesson(result)


def test_every_stage_is_scored_on_the_same_folds():
    """Two stages with the same features get the same accuracy fold by fold: a split drawn per stage
    (shuffled differently) would hold out other images and give other numbers."""
    rng = np.random.default_rng(1)
    labels = labels_of(2, 9)
    noisy = separable(labels, 4, rng) * 0.35 + rng.normal(size=(18, 4))
    found = synthetic({"a": noisy, "b": rng.normal(size=(18, 4)), PENULTIMATE: noisy.copy()})
    result = probe_stages(found, labels)
    first, _, last = result.stages
    assert first.fold_accuracies == last.fold_accuracies
    assert len(set(first.fold_accuracies)) > 1  # the folds differ from one another: the check has teeth
    again = [fold_splits(labels) for _ in range(2)]
    assert all((a[0] == b[0]).all() and (a[1] == b[1]).all() for a, b in zip(*again, strict=True))


def test_a_tie_goes_to_the_later_stage_and_the_json_has_the_promised_shape():
    def score(stage: str, depth: float, accuracy: float) -> StageScore:
        return StageScore(stage, depth, 4, accuracy, 0.0, (accuracy,))

    result = ProbeResult(
        "m", (score("s1", 1 / 3, 0.9), score("s2", 2 / 3, 0.9), score(PENULTIMATE, 1.0, 0.8)), 2, 10, 2
    )
    assert result.best.stage == "s2"
    payload = transfer_json([result])
    assert payload == {
        "backbones": {
            "m": {
                "stages": [
                    {"stage": "s1", "relative_depth": 0.3333, "dim": 4, "accuracy": 0.9, "std": 0.0},
                    {"stage": "s2", "relative_depth": 0.6667, "dim": 4, "accuracy": 0.9, "std": 0.0},
                    {"stage": PENULTIMATE, "relative_depth": 1.0, "dim": 4, "accuracy": 0.8, "std": 0.0},
                ],
                "best": "s2",
            }
        }
    }


def test_folds_follow_the_smallest_class():
    assert check_labels(labels_of(2, 3) + ["class 0"] * 10) == 3
    assert check_labels(labels_of(4, 40)) == 5


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["cat"] * 5, "at least 2 classes (only 'cat')"),
        ([], "at least 2 classes"),
        (["cat"] * 5 + ["dog"], "'dog' has only 1"),
    ],
)
def test_sets_that_cannot_be_cross_validated_are_refused(labels, message):
    with pytest.raises(ProbeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_labels(labels)


def test_images_that_did_not_decode_leave_with_their_labels():
    rng = np.random.default_rng(2)
    labels = labels_of(2, 4)
    kept = [label for position, label in enumerate(labels) if position != 3]
    found = synthetic({PENULTIMATE: separable(kept, 4, rng)}, failures=((3, "broken"),))
    result = probe_stages(found, labels)
    assert result.images == 7 and result.failures == ((3, "broken"),)
    assert result.folds == 3  # class 0 lost an image: 3 left
