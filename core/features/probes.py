"""Which layer fits your images: a cross-validated linear probe on every stage of a backbone.

Each stage's pooled features (core.features.stages, one forward per image for all of them) are
standardised and fitted with a logistic regression (scikit-learn), scored by stratified k-fold
cross-validation. Every stage is scored on the SAME folds, so the differences between stages come
from the features, not from which images happened to be held out. Folds = min(5, the smallest
class's size): every fold holds out at least one image of each class.

The best stage is the one with the highest mean accuracy; on a tie the LATER stage wins: the
penultimate layer is what Classify and Features already use, and an earlier stage is only worth
cutting the network for when it does strictly better.

Speed: the probes must cost well under one extraction pass (bench/bench_transfer.py). A fit is
capped at MAX_ITER iterations (lbfgs needs 30-60 here), and numpy's BLAS runs on one thread while
probes fit (one_blas_thread: 40x faster on a busy 2-core machine). Reducing wide stages by PCA
first was measured and dropped: it was slower, and with fewer images than numbers it changes nothing.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from core.datasets.labelled import LabelledImage
from core.errors import ZooScopeError
from core.features.stages import PENULTIMATE, StageFeatures, stage_features
from core.models.loading import LoadedModel
from core.progress import Progress

MAX_FOLDS = 5
MAX_ITER = 200  # lbfgs converges well before this on standardised features; a cap, not a setting
SEED = 0
CLEAR_MARGIN = 0.05  # a stage ahead of the penultimate layer by less is within the folds' noise

Splits = list[tuple[np.ndarray, np.ndarray]]  # (train rows, test rows) per fold


class ProbeError(ZooScopeError):
    """A labelled set that cannot be cross-validated (one class, or a class of one image)."""


@dataclass(frozen=True)
class StageScore:
    """One stage's probe: its mean accuracy over the folds and their spread."""

    stage: str
    relative_depth: float  # near 0 (the first stage) to 1 (the penultimate layer)
    dim: int
    accuracy: float  # mean over the folds
    std: float  # standard deviation over the folds
    fold_accuracies: tuple[float, ...]

    def as_json(self) -> dict:
        return {
            "stage": self.stage,
            "relative_depth": round(self.relative_depth, 4),
            "dim": self.dim,
            "accuracy": round(self.accuracy, 4),
            "std": round(self.std, 4),
        }


@dataclass(frozen=True)
class ProbeResult:
    """Every stage of one backbone probed on one labelled set, in network order (penultimate last)."""

    model: str
    stages: tuple[StageScore, ...]
    folds: int
    images: int
    classes: int
    failures: tuple[tuple[int, str], ...] = ()  # images that did not decode (position, why), left out

    @property
    def best(self) -> StageScore:
        """The highest mean accuracy; a tie goes to the later stage (see the module docstring)."""
        return max(reversed(self.stages), key=lambda score: round(score.accuracy, 9))

    @property
    def penultimate(self) -> StageScore:
        return self.stages[-1]

    def as_json(self) -> dict:
        return {"stages": [score.as_json() for score in self.stages], "best": self.best.stage}


def transfer_json(results: Sequence[ProbeResult]) -> dict:
    """The `transfer` command's JSON (and the page's session result): backbone -> stages and best."""
    return {"backbones": {result.model: result.as_json() for result in results}}


def check_labels(labels: Sequence[str]) -> int:
    """The number of folds for `labels`; ProbeError unless there are 2+ classes of 2+ images each."""
    counts = Counter(labels)
    if len(counts) < 2:
        only = f" (only '{next(iter(counts))}')" if counts else ""
        raise ProbeError(f"Probing a layer needs images of at least 2 classes{only}; add another class.")
    small = sorted(label for label, count in counts.items() if count < 2)
    if small:
        names = ", ".join(f"'{label}'" for label in small[:5])
        verb = "has" if len(small) == 1 else "have"
        raise ProbeError(f"Every class needs at least 2 images to cross-validate a probe; {names} {verb} only 1.")
    return min(MAX_FOLDS, min(counts.values()))


def fold_splits(labels: Sequence[str], *, seed: int = SEED) -> Splits:
    """Stratified folds over `labels` (checked by check_labels): drawn once, shared by every stage."""
    from sklearn.model_selection import StratifiedKFold

    folds = check_labels(labels)
    targets = np.asarray(labels)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(targets)), targets))


def _probe():
    """A fresh linear probe: standardise (on the training fold), then a logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=MAX_ITER))


_blas_lock = threading.Lock()
_blas_users = 0
_blas_limit: list = []


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """numpy's and scipy's BLAS on one thread while probes fit (torch's own threads are left alone).

    Measured here: a probe fit on 2 BLAS threads of a busy 2-core machine took 10 s, on one 0.24 s
    (the threads spin while waiting for each other). The limit is process-wide, so overlapping
    sessions share it: the first one in sets it, the last one out restores it.
    """
    global _blas_users
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    with _blas_lock:
        if _blas_users == 0:
            _blas_limit.append(threadpool_limits(limits=1, user_api="blas"))
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limit.pop().restore_original_limits()


def cross_validated(features: np.ndarray, labels: np.ndarray, splits: Splits) -> tuple[float, ...]:
    """Each fold's accuracy of a probe fitted on the rest: `features` (N, D), `labels` (N,)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    accuracies = []
    for train, test in splits:
        probe = _probe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # capped on purpose: speed over the last 0.1%
            probe.fit(features[train], labels[train])
        accuracies.append(float((probe.predict(features[test]) == labels[test]).mean()))
    return tuple(accuracies)


def probe_stages(
    found: StageFeatures, labels: Sequence[str], *, seed: int = SEED, progress: Progress | None = None
) -> ProbeResult:
    """A linear probe on every point of `found`, on the same folds.

    `labels` has one entry per image given to stage_features, failures included: the images that did
    not decode are left out here, with their labels. ProbeError where what remains cannot be cross-validated.
    """
    failed = {position for position, _ in found.failures}
    kept = [label for position, label in enumerate(labels) if position not in failed]
    rows = len(found.penultimate)
    if len(kept) != rows:
        raise ValueError(f"{len(labels)} labels for {rows + len(failed)} images")
    splits = fold_splits(kept, seed=seed)
    targets = np.asarray(kept)
    scores = []
    for done, point in enumerate(found.points):
        if progress:
            progress(done, len(found.points), f"Probing {point.label} of {found.model}")
        with one_blas_thread():
            accuracies = cross_validated(found.features[point.name].numpy().astype(np.float64), targets, splits)
        scores.append(
            StageScore(
                stage=point.name,
                relative_depth=point.relative_depth,
                dim=point.dim,
                accuracy=float(np.mean(accuracies)),
                std=float(np.std(accuracies)),
                fold_accuracies=accuracies,
            )
        )
    if progress:
        progress(len(found.points), len(found.points), f"Probed every stage of {found.model}")
    return ProbeResult(
        model=found.model,
        stages=tuple(scores),
        folds=len(splits),
        images=rows,
        classes=len(set(kept)),
        failures=found.failures,
    )


def probe_backbone(
    loaded: LoadedModel,
    items: Sequence[LabelledImage],
    *,
    batch_size: int = 16,
    progress: Progress | None = None,
    before_batch: Callable[[], None] | None = None,
) -> ProbeResult:
    """Every stage of `loaded` probed on labelled images: one forward per image, then the probes.

    The labels are checked before the network runs: a set that cannot be probed costs nothing.
    """
    check_labels([item.label for item in items])
    found = stage_features(
        loaded, [item.data for item in items], batch_size=batch_size, progress=progress, before_batch=before_batch
    )
    return probe_stages(found, [item.label for item in items], progress=progress)


def lesson(result: ProbeResult) -> str:
    """One or two sentences that say what the probes mean, with the numbers."""
    best, last = result.best, result.penultimate
    where = f"{best.relative_depth:.2f} of the way through {result.model}"
    if best.stage == PENULTIMATE:
        return (
            f"The penultimate layer fits best ({last.accuracy:.0%}): your images are like ImageNet's, so the "
            "features Classify and Fine-tune already use are the right ones."
        )
    margin = best.accuracy - last.accuracy
    if margin < CLEAR_MARGIN:
        return (
            f"{best.stage} ({where}) scores {best.accuracy:.0%}, about the penultimate layer's {last.accuracy:.0%} "
            f"(+{margin:.2f}): the last layer's features serve these images as well as any."
        )
    return (
        f"{best.stage} ({where}) beats the penultimate layer by {margin:.2f} ({best.accuracy:.0%} against "
        f"{last.accuracy:.0%}): your images are unlike ImageNet's objects, so fine-tune from that stage "
        "(Fine-tune: features from) or unfreeze deeper."
    )
