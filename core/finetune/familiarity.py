"""“Unlike the images it was trained on”: how far a photo is, in the head's feature space, from every training image.

A softmax always names one of its classes, often confidently, for a photo of something else (a cat
called "zebra · 98.8%"). But in the backbone's feature space such a photo lies far from every training
image. So a trained model keeps its training images' features (the head's inputs, L2-normalised,
float16, at most MAX_REFERENCES of them) and judges each new photo by the cosine similarity of its
nearest one (k-NN with k = 1; Sun et al., ICML 2022, "Out-of-distribution detection with deep nearest
neighbors"). bench/bench_unlike.py measured it against k = 3 and 5 and against Mahalanobis distance
(class means, shared covariance with shrinkage): on real photos all of them separate perfectly, and
k = 1 needs no covariance to invert and reads plainly ("its nearest training image is 0.28 alike").

The threshold comes from the validation images, which the model never trained on: the 5th percentile
of their similarities, rounded down to 0.01, so that PASS_RATE of new images like the training set
pass. A photo below it reads NOT_SURE_UNLIKE, with its best guess kept. 0 turns the test off.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from core.classify import predict as core_predict
from core.classify.classifier import Classifier
from core.classify.predict import Classification, Failure
from core.datasets.labelled import LabelledImage
from core.finetune.extraction import extract_features
from core.models.loading import LoadedModel
from core.preprocessing import Transform
from core.progress import Progress

NOT_SURE_UNLIKE = "not sure: unlike the images it was trained on"
MEASURE = "cosine_1nn"  # the bundle's name for how similarity is measured
PASS_RATE = 0.95  # share of the validation images the default threshold lets through
MAX_REFERENCES = 2000  # training images kept (a deterministic sample beyond): 5 MB for 1280 features
REFERENCES = "familiarity.references"  # the bundle's tensor names
VALIDATION = "familiarity.validation"
_UNIT_NORM_TOLERANCE = 1e-2  # float16 rows of unit length stay within this of 1


def check_min_similarity(value: object) -> float:
    """A threshold as a float in [0, 1], or ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"minimum similarity must be a number from 0 to 1, not {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"minimum similarity must be from 0 to 1, not {value}")
    return float(value)


def _sample(rows: torch.Tensor, limit: int, seed: int) -> torch.Tensor:
    """At most `limit` rows, the same ones for the same seed, in their order."""
    if len(rows) <= limit:
        return rows
    keep = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))[:limit].sort().values
    return rows[keep]


def nearest_similarity(references: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """For each row of `features` (N, D), the cosine similarity of its nearest reference (unit rows, (R, D)): (N,)."""
    unit = F.normalize(features.detach().float().cpu(), dim=1)
    return (unit @ references.float().T).max(dim=1).values


def default_min_similarity(validation: torch.Tensor) -> float:
    """The similarity PASS_RATE of the validation images reach, rounded down to 0.01 (0 without any)."""
    if not len(validation):
        return 0.0
    percentile = float(np.quantile(validation.float().numpy(), 1.0 - PASS_RATE))
    return min(max(math.floor(percentile * 100) / 100, 0.0), 1.0)


@dataclass(eq=False)
class Familiarity:
    """What a trained model keeps to say a photo is unlike its training images."""

    references: torch.Tensor  # (R, D) float16 unit rows: training images' head inputs
    validation: torch.Tensor  # (V,) float32: each validation image's similarity (what the default came from)
    min_similarity: float  # below this the answer is NOT_SURE_UNLIKE; the page may change it

    @classmethod
    def fit(cls, train_features: torch.Tensor, val_features: torch.Tensor, *, seed: int = 0) -> Familiarity:
        """From the head's inputs for the training and validation images."""
        references = _sample(F.normalize(train_features.detach().float().cpu(), dim=1), MAX_REFERENCES, seed)
        references = references.half().contiguous()
        validation = _sample(nearest_similarity(references, val_features), MAX_REFERENCES, seed).contiguous()
        return cls(references, validation, default_min_similarity(validation))

    @property
    def feature_dim(self) -> int:
        return int(self.references.shape[1])

    def similarity(self, features: torch.Tensor) -> torch.Tensor:
        return nearest_similarity(self.references, features)

    def passing_share(self, min_similarity: float | None = None) -> float:
        """The share of validation images at or above `min_similarity` (the model's own by default); NaN if none."""
        if not len(self.validation):
            return math.nan
        threshold = self.min_similarity if min_similarity is None else min_similarity
        return int((self.validation >= threshold).sum()) / len(self.validation)

    # --- in a bundle: a manifest entry and two tensors ------------------------------------------------

    def manifest(self) -> dict:
        return {
            "measure": MEASURE,
            "min_similarity": float(self.min_similarity),
            "references": len(self.references),
            "validation": len(self.validation),
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        return {REFERENCES: self.references.contiguous().clone(), VALIDATION: self.validation.contiguous().clone()}

    @classmethod
    def from_bundle(cls, entry: dict, tensors: dict[str, torch.Tensor]) -> Familiarity:
        """From a checked manifest entry and tensors of the expected shapes; ValueError for values out of range."""
        references, validation = tensors[REFERENCES], tensors[VALIDATION]
        norms = references.float().norm(dim=1)
        if not bool(((norms - 1).abs() <= _UNIT_NORM_TOLERANCE).all()):
            raise ValueError(f"{REFERENCES} must hold rows of unit length")
        if not bool(((validation >= -1.0) & (validation <= 1.0)).all()):
            raise ValueError(f"{VALIDATION} must hold similarities from -1 to 1")
        return cls(references, validation, check_min_similarity(entry["min_similarity"]))


def learn_familiarity(
    head_inputs: Callable[[torch.Tensor], torch.Tensor],
    loaded: LoadedModel,
    train_items: Sequence[LabelledImage],
    val_items: Sequence[LabelledImage],
    *,
    frozen: tuple[torch.Tensor, torch.Tensor] | None,
    seed: int = 0,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> Familiarity:
    """What a trained model keeps of its training images, at the end of its training. `frozen`: the head's inputs
    for the (training, validation) images where training computed them already (the frozen backbone's features);
    None where it trained copies of the network: then `head_inputs` (TrainedModel.head_inputs) computes them."""
    if frozen is None:
        computed = extract_features(
            head_inputs,
            loaded.preprocess,
            [*train_items, *val_items],
            batch_size=batch_size,
            progress=progress,
            device=loaded.device,
        )
        frozen = computed[: len(train_items)], computed[len(train_items) :]
    return Familiarity.fit(*frozen, seed=seed)


def check_entry(entry: object) -> dict:
    """A bundle manifest's "familiarity" entry, checked (ValueError says what is wrong)."""
    if not isinstance(entry, dict) or entry.get("measure") != MEASURE:
        raise ValueError(f"familiarity must be a JSON object with measure '{MEASURE}'")
    check_min_similarity(entry.get("min_similarity"))
    for name in ("references", "validation"):
        count = entry.get(name)
        least = 1 if name == "references" else 0
        if isinstance(count, bool) or not isinstance(count, int) or not least <= count <= MAX_REFERENCES:
            raise ValueError(f"familiarity's {name} must be a whole number from {least} to {MAX_REFERENCES}")
    return entry


def expected_tensors(entry: dict, feature_dim: int) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """The tensors a checked entry promises: name -> (shape, dtype)."""
    return {
        REFERENCES: ((entry["references"], feature_dim), torch.float16),
        VALIDATION: ((entry["validation"],), torch.float32),
    }


# --- judging answers --------------------------------------------------------------------------------


def with_min_similarity(
    results: Sequence[Classification | Failure], min_similarity: float
) -> list[Classification | Failure]:
    """The same results, each measured classification judged against `min_similarity` (others as they are)."""
    return [
        dataclasses.replace(r, min_similarity=min_similarity)
        if isinstance(r, Classification) and r.similarity is not None
        else r
        for r in results
    ]


@dataclass(eq=False)
class _Measuring:
    """A classifier that also keeps, in order, each image's similarity to the training images (one per call)."""

    model: Classifier
    features_and_logits: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    familiarity: Familiarity
    similarities: list[float] = dataclasses.field(default_factory=list)

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def categories(self) -> Sequence[str]:
        return self.model.categories

    @property
    def preprocess(self) -> Transform:
        return self.model.preprocess

    @property
    def device(self) -> torch.device:
        return self.model.device

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            features, logits = self.features_and_logits(batch.to(self.device))
            self.similarities += self.familiarity.similarity(features).tolist()
        return logits


def classify_files(
    model: Classifier,
    features_and_logits: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    familiarity: Familiarity,
    files: Sequence[tuple[str, bytes]],
    **kwargs,
) -> list[Classification | Failure]:
    """core.classify.predict.classify_files, each classification with its photo's similarity to the training
    images and the model's minimum. `features_and_logits(batch)` gives the head's inputs and the logits."""
    measuring = _Measuring(model, features_and_logits, familiarity)
    results = core_predict.classify_files(measuring, files, **kwargs)
    similarities = iter(measuring.similarities)  # in order: failures never reach the forward
    judged = [
        dataclasses.replace(r, similarity=next(similarities), min_similarity=familiarity.min_similarity)
        if isinstance(r, Classification)
        else r
        for r in results
    ]
    if next(similarities, None) is not None:
        raise RuntimeError("more similarities than classified images")
    return judged
