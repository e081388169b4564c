"""core.classify.predict with the real bundled ImageNet model on real photos, fully offline."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
import torch
from PIL import Image
from skimage import data as skdata
from torchvision.models import ResNet50_Weights

from core.classify import predict
from core.classify.predict import (
    MAX_TOP_K,
    Classification,
    Failure,
    Prediction,
    classify_files,
    classify_images,
    predictions_frame,
    preprocess,
    probabilities,
    summary_frame,
    top_k,
    top_k_frame,
)
from core.models import loading
from core.models.catalog import get_spec
from tests.rounding import levels_apart

CATS = {"tabby", "tiger cat", "Egyptian cat"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cat() -> Image.Image:
    return Image.fromarray(skdata.chelsea())  # 451x300 RGB


@pytest.fixture(scope="module")
def coffee() -> Image.Image:
    return Image.fromarray(skdata.coffee())  # 600x400 RGB


@pytest.fixture(scope="module")
def rocket() -> Image.Image:
    return Image.fromarray(skdata.rocket())


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


# --- real predictions -----------------------------------------------------------------------------


def test_cat_photo(lite0, cat):
    (result,) = classify_images(lite0, [cat], ["chelsea.png"])
    assert result.top1.label in CATS
    assert result.top1.probability > 0.3
    assert result.file == "chelsea.png" and result.model == "efficientnet_lite0"


def test_coffee_photo(lite0, coffee):
    (result,) = classify_images(lite0, [coffee], ["coffee.png"])
    assert result.top1.label == "espresso"


def test_preprocess_is_the_weights_own_transforms(lite0, cat, coffee):
    batch = preprocess(lite0, [cat, coffee])
    reference = get_spec("efficientnet_lite0").weights.transforms()
    assert batch.shape == (2, 3, 224, 224) and batch.dtype == torch.float32
    apart = levels_apart(batch, torch.stack([reference(cat), reference(coffee)]), reference.std)
    assert apart.max() <= 2 + 1e-3 and apart.mean() < 0.1  # resize rounding only (core.preprocessing)
    # mean = std = 0.5: inputs lie in [-1, 1], not the [0, 1] of a bare ToTensor()
    assert batch.min() < -0.5 and batch.max() <= 1.0 + 1e-6


def test_preprocess_of_resnet50_as_load_model_wires_it(monkeypatch, cat):
    # No resnet50 weights offline: load_model's own wiring, with the file and the network stubbed.
    monkeypatch.setattr(loading.weights, "resolve", lambda spec, progress=None: None)
    monkeypatch.setattr(loading, "read_state_dict", lambda path: {})
    monkeypatch.setattr(loading, "build_model", lambda spec, state_dict: torch.nn.Identity())
    model = loading.load_model("resnet50")
    batch = preprocess(model, [cat])
    expected = ResNet50_Weights.IMAGENET1K_V2.transforms()  # resnet50's DEFAULT: resize 232, crop 224
    assert expected.resize_size == [232]
    assert model.preprocess.resize_size == [232] and model.preprocess.crop_size == [224]
    apart = levels_apart(batch, expected(cat).unsqueeze(0), expected.std)
    assert apart.max() <= 2 + 1e-3 and apart.mean() < 0.1


def test_probabilities_sum_to_one(lite0, cat, coffee, rocket):
    probs = probabilities(lite0, preprocess(lite0, [cat, coffee, rocket]))
    assert probs.shape == (3, 1000) and probs.dtype == torch.float32 and probs.device.type == "cpu"
    assert torch.allclose(probs.sum(dim=1), torch.ones(3), atol=1e-5)
    assert (probs >= 0).all()
    assert not probs.requires_grad


@pytest.mark.parametrize("k", [1, 5, 20])
def test_top_k_of_real_model(lite0, cat, k):
    (result,) = classify_images(lite0, [cat], ["cat"], k=k)
    ranks = [p.rank for p in result.predictions]
    probs = [p.probability for p in result.predictions]
    assert ranks == list(range(1, k + 1))
    assert probs == sorted(probs, reverse=True)
    assert all(lite0.categories[p.class_index] == p.label for p in result.predictions)
    assert len({p.class_index for p in result.predictions}) == k
    assert all(isinstance(p.probability, float) and isinstance(p.class_index, int) for p in result.predictions)


def test_top_k_exact():
    probs = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    categories = ["a", "b", "c"]
    first, second = top_k(probs, categories, 2)
    assert first == (
        Prediction(rank=1, label="b", probability=pytest.approx(0.6), class_index=1),
        Prediction(rank=2, label="c", probability=pytest.approx(0.3), class_index=2),
    )
    assert [p.label for p in second] == ["a", "c"]
    # more than there are classes: all of them, no error
    assert [len(row) for row in top_k(probs, categories, MAX_TOP_K)] == [3, 3]


def test_batched_equals_single(lite0, cat, coffee, rocket):
    images = [cat, coffee, rocket]
    batched = probabilities(lite0, preprocess(lite0, images))
    singles = torch.cat([probabilities(lite0, preprocess(lite0, [image])) for image in images])
    assert torch.allclose(batched, singles, atol=1e-5)

    together = classify_images(lite0, images, ["a", "b", "c"], k=3)
    assert [r.file for r in together] == ["a", "b", "c"]
    for result, row in zip(together, singles, strict=True):
        alone = top_k(row.unsqueeze(0), lite0.categories, 3)[0]
        assert [p.label for p in result.predictions] == [p.label for p in alone]
        assert [p.probability for p in result.predictions] == pytest.approx([p.probability for p in alone], abs=1e-5)


def test_shared_model_is_left_untouched(lite0, cat):
    before = {k: v.clone() for k, v in list(lite0.module.state_dict().items())[:5]}
    classify_images(lite0, [cat], ["cat"])
    assert not lite0.module.training
    assert all(torch.equal(lite0.module.state_dict()[k], v) for k, v in before.items())


# --- files in, results out ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def uploads(cat, coffee) -> list[tuple[str, bytes]]:
    return [("chelsea.jpg", encode(cat, "JPEG")), ("notes.txt", b"not an image"), ("coffee.png", encode(coffee, "PNG"))]


@pytest.mark.parametrize("batch_size", [1, 2, 16])
def test_classify_files_keeps_order_and_failures(lite0, uploads, batch_size):
    calls = []
    results = classify_files(lite0, uploads, k=3, batch_size=batch_size, progress=lambda *a: calls.append(a))
    assert [type(r) for r in results] == [Classification, Failure, Classification]
    assert [r.file for r in results] == ["chelsea.jpg", "notes.txt", "coffee.png"]
    assert results[0].top1.label in CATS
    assert results[2].top1.label == "espresso"
    assert all(len(r.predictions) == 3 for r in (results[0], results[2]))

    error = results[1].error
    assert error and error[0].isupper() and error.endswith(".")  # a sentence, not a traceback
    assert "Traceback" not in error and "PIL" not in error and "not an image" in error

    assert calls and calls[-1][:2] == (3, 3)
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)


def test_classify_files_all_bad_and_empty(lite0):
    results = classify_files(lite0, [("a.bin", b"\x00\x01\x02"), ("b.txt", b"")])
    assert [type(r) for r in results] == [Failure, Failure]
    assert classify_files(lite0, []) == []


def test_thumbnails(lite0, uploads):
    (result,) = classify_files(lite0, uploads[:1], thumbnails=True)
    assert result.thumbnail is not None and max(result.thumbnail.size) <= 512
    assert result.thumbnail.size[0] / result.thumbnail.size[1] == pytest.approx(451 / 300, rel=0.01)


# --- tables and JSON ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def results(lite0, uploads):
    return classify_files(lite0, uploads, k=4)


def test_predictions_frame(results):
    frame = predictions_frame(results)
    assert list(frame.columns) == ["file", "model", "rank", "label", "probability", "latency_ms"]
    assert len(frame) == 2 * 4  # the failure has no rows
    assert list(frame["file"].unique()) == ["chelsea.jpg", "coffee.png"]
    assert list(frame["rank"]) == [1, 2, 3, 4, 1, 2, 3, 4]
    assert set(frame["model"]) == {"efficientnet_lite0"}
    assert frame.iloc[4]["label"] == "espresso"


def test_predictions_frame_of_nothing():
    frame = predictions_frame([Failure(file="x", error="Bad.")])
    assert frame.empty and list(frame.columns) == ["file", "model", "rank", "label", "probability", "latency_ms"]


def test_summary_frame(results):
    frame = summary_frame(results)
    assert list(frame.columns) == ["file", "top1", "confidence", "latency_ms", "error"]
    assert len(frame) == 3
    assert list(frame["file"]) == ["chelsea.jpg", "notes.txt", "coffee.png"]
    assert frame.loc[0, "top1"] in CATS and frame.loc[0, "error"] == ""
    assert frame.loc[2, "top1"] == "espresso"
    assert pd.isna(frame.loc[1, "top1"]) and pd.isna(frame.loc[1, "confidence"])
    assert frame.loc[1, "error"] == results[1].error
    assert 0 < frame.loc[0, "confidence"] <= 1


def test_results_have_latency_and_no_thumbnail_by_default(results):
    classified = [r for r in results if isinstance(r, Classification)]
    assert all(r.latency_ms > 0 and r.thumbnail is None for r in classified)


def test_top_k_frame(results):
    frame = top_k_frame(results[0])
    assert list(frame.columns) == ["rank", "label", "probability"]
    assert list(frame["rank"]) == [1, 2, 3, 4]


def test_as_json(results):
    good, bad = results[0].as_json(), results[1].as_json()
    assert set(good) == {"file", "model", "predictions", "latency_ms"}
    assert good["file"] == "chelsea.jpg" and good["model"] == "efficientnet_lite0"
    assert len(good["predictions"]) == 4
    assert all(set(p) == {"label", "probability"} for p in good["predictions"])
    assert good["predictions"][0]["label"] in CATS
    assert bad == {"file": "notes.txt", "error": results[1].error}
    assert json.loads(json.dumps([good, bad])) == [good, bad]  # plain JSON types only


def test_defaults():
    assert predict.DEFAULT_TOP_K == 5 and MAX_TOP_K == 20
