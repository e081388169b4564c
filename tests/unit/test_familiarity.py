"""core.finetune.familiarity: "not sure: unlike the images it was trained on", from the nearest training image.

The test that matters: a model fine-tuned on the example dataset (brick, grass, gravel) must not give a
confident answer for real photos of other things, while new tiles of its own classes still get theirs."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from core.classify.predict import Classification, Prediction
from core.datasets.check_images import check_images
from core.finetune.config import TrainConfig
from core.finetune.examples import example_dataset
from core.finetune.familiarity import (
    MAX_REFERENCES,
    NOT_SURE_UNLIKE,
    Familiarity,
    check_min_similarity,
    default_min_similarity,
    nearest_similarity,
    with_min_similarity,
)
from core.finetune.threshold import NOT_SURE, answer, predictions_with_threshold
from core.finetune.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def classified(top1: float, similarity: float | None, min_similarity: float | None, threshold=0.5) -> Classification:
    predictions = (Prediction(1, "grass", top1, 0), Prediction(2, "brick", 1 - top1, 1))
    return Classification(
        "x.png", "my model", predictions, 1.0, threshold=threshold, similarity=similarity, min_similarity=min_similarity
    )


# --- the distance and its threshold ---------------------------------------------------------------


def test_nearest_similarity_is_the_cosine_of_the_closest_training_image():
    references = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=1)
    features = torch.tensor([[3.0, 0.0], [1.0, 1.0], [-2.0, 0.1]])  # any length: only the direction counts
    assert torch.allclose(nearest_similarity(references, features), torch.tensor([1.0, 0.5**0.5, 0.1 / 4.01**0.5]))


def test_fit_keeps_unit_float16_training_features_and_lets_95_percent_of_validation_through():
    generator = torch.Generator().manual_seed(0)
    train_features = torch.randn(50, 8, generator=generator).abs()
    val_features = torch.randn(40, 8, generator=generator).abs()
    familiar = Familiarity.fit(train_features, val_features)
    assert familiar.references.dtype == torch.float16 and familiar.references.shape == (50, 8)
    assert torch.allclose(familiar.references.float().norm(dim=1), torch.ones(50), atol=1e-3)
    assert familiar.validation.shape == (40,) and familiar.validation.dtype == torch.float32
    percentile = float(np.quantile(familiar.validation.numpy(), 0.05))
    assert familiar.min_similarity == math.floor(percentile * 100) / 100  # rounded down: never above it
    assert familiar.passing_share() >= 0.95
    assert familiar.passing_share(1.01) == 0.0
    # A training image's own features: its nearest reference is itself.
    assert torch.allclose(familiar.similarity(train_features[:5]), torch.ones(5), atol=1e-3)


def test_the_training_features_kept_are_bounded_and_always_the_same():
    features = torch.rand(MAX_REFERENCES + 7, 3)
    first, second = Familiarity.fit(features, features[:4]), Familiarity.fit(features, features[:4])
    assert len(first.references) == MAX_REFERENCES
    assert torch.equal(first.references, second.references)


def test_default_min_similarity_without_validation_never_fires():
    assert default_min_similarity(torch.empty(0)) == 0.0


@pytest.mark.parametrize("value", [-0.1, 1.5, "high", True, None, float("nan")])
def test_a_bad_min_similarity_is_refused(value):
    with pytest.raises(ValueError, match="minimum similarity"):
        check_min_similarity(value)


def test_why_not_sure_unlike_first_then_low_confidence():
    assert classified(0.99, 0.2, 0.8).not_sure_why == "unlike_training"
    assert classified(0.3, 0.2, 0.8).not_sure_why == "unlike_training"  # both: the stronger reason
    assert classified(0.3, 0.9, 0.8).not_sure_why == "low_confidence"
    assert classified(0.99, 0.9, 0.8).not_sure_why is None
    assert classified(0.99, 0.2, 0.0).not_sure_why is None  # 0 turns the test off
    assert classified(0.3, None, None).not_sure_why == "low_confidence"  # a bundle made before: confidence alone
    assert answer(classified(0.99, 0.2, 0.8)) == NOT_SURE_UNLIKE == "not sure: unlike the images it was trained on"
    assert answer(classified(0.3, 0.9, 0.8)) == NOT_SURE == "not sure: low confidence"
    report = classified(0.99, 0.2, 0.8).as_json()
    assert report["not_sure"] is True and report["not_sure_why"] == "unlike_training"
    assert report["below_threshold"] is False and report["similarity"] == 0.2 and report["min_similarity"] == 0.8
    judged = with_min_similarity([classified(0.99, 0.2, 0.8)], 0.1)
    assert judged[0].min_similarity == 0.1 and judged[0].not_sure_why is None
    frame = predictions_with_threshold([classified(0.99, 0.2, 0.8)], 0.5)
    assert frame["not_sure_why"].tolist() == ["unlike_training"] * 2 and frame["not_sure"].all()


# --- a real model on real photos ------------------------------------------------------------------


def png(image: Image.Image | np.ndarray) -> bytes:
    buffer = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).convert("RGB").save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def textures(lite0):
    """The example dataset (brick, grass, gravel) in fast mode, as a person trains it in the first minute."""
    return train(lite0, example_dataset(), TrainConfig())


def test_a_photo_unlike_the_training_images_never_passes_as_a_confident_answer(textures, lite0):
    # Real photos of other things: the app's example photos (a cat, a coffee, a rocket), a crop of each, and
    # scikit-image's own photos of people, a horse, a clock, coins, the moon, a page.
    examples = check_images()[::13]  # chelsea, coffee, rocket as they are
    others = [skdata.astronaut(), skdata.camera(), skdata.clock(), skdata.coins(), skdata.moon(), skdata.page()]
    photos = [
        *examples,
        *(e.crop((0, 0, e.width // 2, e.height // 2)) for e in examples),
        *map(Image.fromarray, others),
    ]
    files = [(f"photo_{i}.png", png(photo)) for i, photo in enumerate(photos)]
    results = textures.classify_files(lite0, files, k=3)
    assert len(results) == len(photos) == 12
    for result in results:
        assert isinstance(result, Classification)
        assert result.not_sure_why == "unlike_training", (result.file, result.top1, result.similarity)
        assert result.as_json()["not_sure"] is True
        assert answer(result) == NOT_SURE_UNLIKE and result.top1.label in textures.classes  # the best guess kept

    # New tiles of its own classes, off the example's grid: like the training images, and answered.
    tiles = {"brick": skdata.brick(), "grass": skdata.grass(), "gravel": skdata.gravel()}
    probes = [(f"{label}.png", png(pixels[300:420, 40:160])) for label, pixels in tiles.items()]
    for result, label in zip(textures.classify_files(lite0, probes, k=3), tiles, strict=True):
        assert isinstance(result, Classification)
        assert result.similarity is not None and result.similarity >= textures.familiarity.min_similarity
        assert result.not_sure_why is None and answer(result) == label
