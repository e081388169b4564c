"""core.finetune.train on real images with the real bundled ImageNet backbone (EfficientNet-Lite0), offline.

Data: skimage's LFW subset (100 faces, 100 non-faces, 25x25 grey) and crops of skimage's textures.
The expensive part, feature extraction, runs once per image set (module fixtures, one FeatureCache).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from skimage import data as skdata

from core.classify import predict
from core.datasets.labelled import Dataset, LabelledImage, dataset_from_uploads, stratified_split
from core.errors import ZooScopeError
from core.features import embedding as embedding_module
from core.features.backbone import backbone_view, block_path, strip_head
from core.finetune.config import EpochLog, TrainConfig
from core.finetune.extraction import FeatureCache, extract_features
from core.finetune.heads import build_head
from core.finetune.metrics import evaluate
from core.finetune.train import train
from core.finetune.trained import TrainedModel
from core.models.building import build_on_meta
from core.models.catalog import get_spec
from core.models.families import FAMILIES
from core.models.family_paths import get_layer
from tests.faces import lfw_pngs, png
from tests.families import smallest_of_each_family
from tests.glyphs import glyph_uploads

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def parameter_hashes(module: nn.Module) -> dict[str, str]:
    named = [*module.named_parameters(), *module.named_buffers()]
    return {name: hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest() for name, t in named}


@pytest.fixture(scope="module")
def faces() -> Dataset:
    face, other = lfw_pngs()
    uploads = {
        "face": [(f"face_{i:03d}.png", data) for i, data in enumerate(face)],
        "not_face": [(f"other_{i:03d}.png", data) for i, data in enumerate(other)],
    }
    dataset = dataset_from_uploads(uploads)
    assert dataset.counts() == {"face": 100, "not_face": 100}
    return dataset


@pytest.fixture(scope="module")
def cache() -> FeatureCache:
    return FeatureCache()


@pytest.fixture(scope="module")
def faces_model(lite0, faces, cache) -> TrainedModel:
    return train(lite0, faces, TrainConfig(mode="fast", epochs=30), cache=cache)


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    return [Image.fromarray(skdata.chelsea()), Image.fromarray(skdata.coffee())]


def val_loss_of(trained: TrainedModel, loaded, dataset: Dataset, cache: FeatureCache) -> float:
    """The validation loss of the head `trained` holds, from cached features."""
    _, val = stratified_split(dataset.items, val_fraction=trained.config.val_fraction, seed=trained.config.seed)
    view = backbone_view(loaded)
    features = extract_features(view.module, loaded.preprocess, val, backbone=loaded.name, cache=cache)
    targets = torch.tensor([trained.classes.index(item.label) for item in val])
    with torch.inference_mode():
        return float(F.cross_entropy(trained.head(features), targets))


# --- learning on real data -----------------------------------------------------------------------


def test_fast_mode_learns_faces(faces_model):
    assert faces_model.val_accuracy >= 0.95
    assert faces_model.classes == ["face", "not_face"]
    assert faces_model.tuned == {} and faces_model.depth == "head"
    assert faces_model.epochs_run == len(faces_model.history) <= 30
    assert all(isinstance(log, EpochLog) for log in faces_model.history)
    best = faces_model.history[faces_model.best_epoch - 1]
    assert best.val_loss == min(log.val_loss for log in faces_model.history)
    assert faces_model.metrics.accuracy == pytest.approx(best.val_acc)
    assert faces_model.name == "my model (efficientnet_lite0, 2 classes)"
    frame = faces_model.metrics.per_class_frame()
    assert list(frame.columns) == ["class", "precision", "recall", "f1", "support"]
    assert frame["support"].tolist() == [20, 20]  # a 20% stratified split of 100 + 100
    confusion = faces_model.metrics.confusion_frame()
    assert list(confusion.columns) == ["true", "predicted", "count"] and confusion["count"].sum() == 40


def test_textures_from_files_on_disk(lite0, tmp_path: Path):
    rng = np.random.default_rng(0)
    for texture in ("brick", "grass", "gravel"):
        image = getattr(skdata, texture)()  # 512x512 grey
        folder = tmp_path / texture
        folder.mkdir()
        for i in range(20):
            y, x = rng.integers(0, image.shape[0] - 64, size=2)
            (folder / f"{texture}_{i:02d}.png").write_bytes(png(image[y : y + 64, x : x + 64]))
    uploads = {
        folder.name: [(path.name, path.read_bytes()) for path in sorted(folder.glob("*.png"))]
        for folder in sorted(tmp_path.iterdir())
    }
    dataset = dataset_from_uploads(uploads)
    assert dataset.counts() == {"brick": 20, "grass": 20, "gravel": 20}
    trained = train(lite0, dataset, TrainConfig(epochs=30))
    assert trained.val_accuracy >= 0.9
    assert trained.metrics.per_class_frame()["support"].sum() == 12


def test_trained_model_classifies_files(lite0, faces, faces_model):
    files = [
        (faces.items[0].name, faces.items[0].data),
        ("notes.txt", b"not an image"),
        (faces.items[-1].name, faces.items[-1].data),
    ]
    results = faces_model.classify_files(lite0, files, k=5)
    assert isinstance(results[0], predict.Classification) and isinstance(results[2], predict.Classification)
    assert isinstance(results[1], predict.Failure)
    assert results[0].model == "my model (efficientnet_lite0, 2 classes)"
    assert len(results[0].predictions) == 2  # k is capped at the number of classes
    assert results[0].top1.label == "face" and results[2].top1.label == "not_face"
    probabilities = faces_model.predict([Image.open(io.BytesIO(faces.items[0].data))], lite0)
    assert probabilities.shape == (1, 2)
    assert float(probabilities[0, 0]) == pytest.approx(results[0].top1.probability, abs=1e-6)


def test_mlp_head_is_deterministic(lite0, faces, cache, faces_model):
    config = TrainConfig(head="mlp", epochs=10, seed=3)
    first, second = (train(lite0, faces, config, cache=cache) for _ in range(2))
    assert isinstance(first.head, nn.Sequential)
    assert first.val_accuracy >= 0.9
    for (name, a), (_, b) in zip(first.head.state_dict().items(), second.head.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert [log.val_loss for log in first.history] == [log.val_loss for log in second.history]


# --- feature cache --------------------------------------------------------------------------------


def test_second_training_runs_no_backbone_forward(monkeypatch, lite0, faces, cache, faces_model):
    forwards = []
    real = embedding_module.forward_features  # every backbone forward of an extraction goes through it
    monkeypatch.setattr(embedding_module, "forward_features", lambda m, b: forwards.append(len(b)) or real(m, b))
    hits, misses = cache.hits, cache.misses
    again = train(lite0, faces, TrainConfig(mode="fast", epochs=30), cache=cache)
    assert forwards == []
    assert (cache.hits - hits, cache.misses - misses) == (200, 0)
    # Same data, same seed: the very same head.
    for (name, a), (_, b) in zip(again.head.state_dict().items(), faces_model.head.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_feature_cache_is_bounded_lru():
    cache = FeatureCache(max_entries=2)
    cache.put("m", "a", torch.ones(3))
    cache.put("m", "b", torch.zeros(3))
    assert cache.get("m", "a") is not None  # a is now the most recently used
    cache.put("m", "c", torch.full((3,), 2.0))
    assert ("m", "b") not in cache and ("m", "a") in cache and ("m", "c") in cache
    assert cache.get("other", "a") is None  # keyed by backbone too
    assert (cache.hits, cache.misses, len(cache)) == (1, 1, 2)
    with pytest.raises(ValueError):
        FeatureCache(max_entries=0)


# --- stopping -------------------------------------------------------------------------------------


def test_stop_button_keeps_the_best_model(lite0, faces, cache, faces_model):
    logs: list[EpochLog] = []
    trained = train(
        lite0, faces, TrainConfig(epochs=30), cache=cache, on_epoch=logs.append, should_stop=lambda: len(logs) >= 2
    )
    assert trained.epochs_run == 2 and len(logs) == 2 and trained.stopped_by_user and not trained.stopped_early
    assert trained.history == logs
    best = min(logs, key=lambda log: log.val_loss)
    assert trained.best_epoch == best.epoch
    assert val_loss_of(trained, lite0, faces, cache) == pytest.approx(best.val_loss, abs=1e-6)


@pytest.fixture(scope="module")
def random_labels(faces) -> Dataset:
    """The same images (so the cached features serve) with labels drawn at random: nothing to learn."""
    labels = ["a"] * 100 + ["b"] * 100
    random.Random(0).shuffle(labels)
    uploads: dict[str, list[tuple[str, bytes]]] = {"a": [], "b": []}
    for label, item in zip(labels, faces.items, strict=True):
        uploads[label].append((item.name, item.data))
    return dataset_from_uploads(uploads)


def test_early_stopping_restores_the_best_epoch(lite0, random_labels, cache, faces_model):
    progress = []
    config = TrainConfig(epochs=100, lr=1e-2, patience=3)
    trained = train(lite0, random_labels, config, cache=cache, progress=lambda *args: progress.append(args))
    assert trained.stopped_early and not trained.stopped_by_user
    assert trained.epochs_run == trained.best_epoch + 3 < 100
    assert trained.best_epoch > 1  # the best state is neither the first nor the last
    best = trained.history[trained.best_epoch - 1]
    assert best.val_loss == min(log.val_loss for log in trained.history) < trained.history[-1].val_loss
    assert val_loss_of(trained, lite0, random_labels, cache) == pytest.approx(best.val_loss, abs=1e-6)
    assert progress[-1][:2] == (trained.epochs_run, 100)


# --- the shared model is never touched ------------------------------------------------------------


@pytest.fixture(scope="module")
def glyphs() -> Dataset:
    """Rendered digits (tests/glyphs.py): images unlike ImageNet's, where fine-tuning has work to do."""
    return dataset_from_uploads(glyph_uploads(6, classes=3))


@pytest.fixture(scope="module")
def concurrent_run(lite0, faces, glyphs, photos):
    """4 threads classify with the shared model while a fast and a finetune training run beside them.

    The finetune run trains the last half with batch-norm statistics adapting: the most it can change.
    """
    module = lite0.module
    before = parameter_hashes(module)
    reference = predict.classify_images(lite0, photos, ["cat", "coffee"])
    reference_probs = predict.probabilities(lite0, predict.preprocess(lite0, photos))
    small = Dataset(classes=faces.classes, items=faces.items[:8] + faces.items[-8:])
    finetune_config = TrainConfig(
        mode="finetune", unfreeze="half", adapt_batchnorm=True, epochs=2, batch_size=8, views=1, train_size=128
    )
    training_done = threading.Event()

    def classify_while_training() -> list:
        answers = []
        while len(answers) < 2 or (not training_done.is_set() and len(answers) < 50):
            results = predict.classify_images(lite0, photos, ["cat", "coffee"])
            probs = predict.probabilities(lite0, predict.preprocess(lite0, photos))
            answers.append((results, probs))
        return answers

    with ThreadPoolExecutor(max_workers=6) as pool:
        fast = pool.submit(train, lite0, small, TrainConfig(mode="fast", epochs=5))  # no cache: real forwards
        finetune = pool.submit(train, lite0, glyphs, finetune_config)
        classifiers = [pool.submit(classify_while_training) for _ in range(4)]
        trained = fast.result(), finetune.result()
        training_done.set()
        answers = [answer for future in classifiers for answer in future.result()]
    return {
        "before": before,
        "after": parameter_hashes(module),
        "reference": reference,
        "reference_probs": reference_probs,
        "answers": answers,
        "fast": trained[0],
        "finetune": trained[1],
    }


def test_predictions_while_training_are_bit_identical(concurrent_run):
    assert len(concurrent_run["answers"]) >= 8
    for results, probs in concurrent_run["answers"]:
        assert torch.equal(probs, concurrent_run["reference_probs"])
        assert [r.predictions for r in results] == [r.predictions for r in concurrent_run["reference"]]


def test_shared_module_parameters_unchanged(lite0, concurrent_run):
    assert concurrent_run["after"] == concurrent_run["before"]
    assert not lite0.module.training
    assert not any(p.requires_grad for p in lite0.module.parameters())
    assert isinstance(lite0.module.classifier, nn.Linear) and lite0.module.classifier.out_features == 1000


def test_finetune_mode_trains_private_copies_of_the_tail(lite0, concurrent_run, photos):
    trained = concurrent_run["finetune"]
    assert trained.epochs_run == 2 and trained.best_epoch >= 1  # the tail's epochs beat the head alone
    assert tuple(trained.tuned) == ("blocks.3", "blocks.4", "blocks.5", "blocks.6", "conv_head", "bn2")
    shared_storage = {t.untyped_storage().data_ptr() for t in [*lite0.module.parameters(), *lite0.module.buffers()]}
    for path, copy in trained.tuned.items():
        shared = get_layer(lite0.module, path)
        own = dict(copy.state_dict())
        assert not any(t.untyped_storage().data_ptr() in shared_storage for t in own.values()), path
        changed = [name for name, t in shared.state_dict().items() if not torch.equal(t, own[name])]
        assert changed, f"the copy of {path} did not train"
    # Statistics adapted (adapt_batchnorm) in the person's copies; the shared ones are unchanged (above).
    assert not torch.equal(trained.tuned["bn2"].running_mean, lite0.module.bn2.running_mean)
    probabilities = trained.predict(photos, lite0)
    assert probabilities.shape == (2, 3)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(2))
    assert concurrent_run["fast"].predict(photos, lite0).shape == (2, 2)


def test_finetune_mode_is_deterministic(lite0, glyphs):
    config = TrainConfig(mode="finetune", unfreeze="last", epochs=1, batch_size=8, views=1, train_size=96)
    first, second = train(lite0, glyphs, config), train(lite0, glyphs, config)
    assert [log.train_loss for log in first.history] == [log.train_loss for log in second.history]
    assert [log.val_loss for log in first.history] == [log.val_loss for log in second.history]
    assert list(first.tuned) == list(second.tuned)
    for path in first.tuned:
        for (name, a), (_, b) in zip(
            first.tuned[path].state_dict().items(), second.tuned[path].state_dict().items(), strict=True
        ):
            assert torch.equal(a, b), f"{path}.{name}"


# --- metrics --------------------------------------------------------------------------------------


def test_metrics_maths_by_hand():
    classes = ["a", "b", "c"]
    items = [LabelledImage(classes[t], f"{i}.png", bytes([i])) for i, t in enumerate([0, 0, 1, 1, 2, 2])]
    targets = torch.tensor([0, 0, 1, 1, 2, 2])
    # predicted: 0, 1, 1, 1, 0, 2 with these confidences
    probabilities = torch.tensor(
        [
            [0.9, 0.05, 0.05],
            [0.2, 0.7, 0.1],
            [0.1, 0.8, 0.1],
            [0.3, 0.6, 0.1],
            [0.95, 0.0, 0.05],
            [0.1, 0.1, 0.8],
        ]
    )
    metrics = evaluate(probabilities, targets, classes, items)
    assert metrics.accuracy == pytest.approx(4 / 6)
    frame = metrics.per_class_frame().set_index("class")
    assert frame.loc["a"].tolist() == pytest.approx([0.5, 0.5, 0.5, 2])
    assert frame.loc["b"].tolist() == pytest.approx([2 / 3, 1.0, 0.8, 2])
    assert frame.loc["c"].tolist() == pytest.approx([1.0, 0.5, 2 / 3, 2])
    assert metrics.macro_f1 == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    confusion = metrics.confusion_frame().pivot(index="true", columns="predicted", values="count")
    assert confusion.to_numpy().tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert [(m.item.name, m.true, m.predicted) for m in metrics.mistakes] == [("4.png", "c", "a"), ("1.png", "a", "b")]
    assert [m.confidence for m in metrics.mistakes] == pytest.approx([0.95, 0.7])


def test_metrics_never_divide_by_zero():
    items = [LabelledImage("a", f"{i}.png", bytes([i])) for i in range(3)]
    metrics = evaluate(torch.tensor([[0.9, 0.1]] * 3), torch.zeros(3, dtype=torch.long), ["a", "b"], items)
    frame = metrics.per_class_frame().set_index("class")
    assert frame.loc["b"].tolist() == [0.0, 0.0, 0.0, 0]  # never predicted, never true: zeros, no NaN
    assert metrics.accuracy == 1.0 and metrics.mistakes == []
    assert not frame.isna().any().any()
    assert isinstance(metrics.confusion, pd.DataFrame) and len(metrics.confusion) == 4


# --- tables, heads, settings ----------------------------------------------------------------------


@pytest.mark.parametrize("name", [*smallest_of_each_family(), "vgg16_bn"])
def test_head_and_block_tables_fit_the_architectures(name):
    spec = get_spec(name)
    model = build_on_meta(spec)
    feature_dim = strip_head(model, spec)
    block = get_layer(model, block_path(spec), name)
    assert block is not None
    if spec.family in ("vgg", "alexnet"):
        assert isinstance(block, nn.Conv2d)  # their last conv
    size = spec.input_size
    with torch.inference_mode():
        features = model.to("meta").eval()(torch.empty(2, 3, size, size, device="meta"))
    assert tuple(features.shape) == (2, feature_dim)


def test_every_family_with_a_head_has_a_last_block():
    for family, traits in FAMILIES.items():
        assert (traits.head is None) == (traits.last_block is None), family


def test_families_without_entries_are_refused(monkeypatch, lite0, faces):
    with pytest.raises(ZooScopeError, match="squeezenet1_1 can't be fine-tuned here"):
        block_path(get_spec("squeezenet1_1"))
    monkeypatch.setitem(
        FAMILIES, "efficientnet_lite", dataclasses.replace(FAMILIES["efficientnet_lite"], last_block=None)
    )
    with pytest.raises(ZooScopeError, match="efficientnet_lite0 can't be fine-tuned here"):
        train(lite0, faces, TrainConfig(mode="finetune", unfreeze="last"))


def test_heads():
    generator = torch.Generator().manual_seed(0)
    linear = build_head("linear", 8, 3, generator=generator)
    assert isinstance(linear, nn.Linear) and (linear.in_features, linear.out_features) == (8, 3)
    mlp = build_head("mlp", 8, 3, hidden=16)
    assert [type(m).__name__ for m in mlp] == ["Linear", "ReLU", "SeededDropout", "Linear"]
    assert mlp[0].out_features == 16 and mlp[2].p == 0.2
    again = build_head("linear", 8, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(linear.weight, again.weight)  # seeded initialisation
    with pytest.raises(ZooScopeError):
        build_head("transformer", 8, 3)


@pytest.mark.parametrize(
    "settings",
    [
        {"mode": "slow"},
        {"head": "cnn"},
        {"epochs": 0},
        {"lr": 0},
        {"val_fraction": 1.0},
        {"label_smoothing": 1.0},
        {"unfreeze": "most"},
        {"train_size": 16},
        {"views": 0},
        {"layer_decay": 0},
        {"flip": "yes"},
        {"crop_scale": 0},
    ],
)
def test_invalid_settings_are_refused(settings):
    with pytest.raises(ZooScopeError, match="Invalid training settings"):
        TrainConfig(**settings)


def test_confusion_cells_and_their_images():
    classes = ["a", "b", "c"]
    true = [0, 0, 0, 1, 1, 2, 2]
    predicted = [0, 0, 1, 1, 0, 0, 0]
    confidence = [0.9, 0.6, 0.8, 0.7, 0.55, 0.65, 0.95]
    items = [LabelledImage(classes[t], f"{i}.png", bytes([i])) for i, t in enumerate(true)]
    probabilities = torch.full((len(true), 3), 0.0)
    for row, (p, c) in enumerate(zip(predicted, confidence, strict=True)):
        probabilities[row] = (1 - c) / 2
        probabilities[row, p] = c
    metrics = evaluate(probabilities, torch.tensor(true), classes, items)

    assert [o.item.name for o in metrics.outcomes] == [f"{i}.png" for i in range(7)]  # validation order
    # Off the diagonal: that pair's mistakes only, most confident first.
    assert [o.item.name for o in metrics.in_cell("c", "a")] == ["6.png", "5.png"]
    assert [o.item.name for o in metrics.in_cell("a", "b")] == ["2.png"]
    # On it: the right answers of that class, least confident first.
    assert [o.item.name for o in metrics.in_cell("a", "a")] == ["1.png", "0.png"]
    assert metrics.in_cell("b", "c") == []
    assert all(o.correct for o in metrics.in_cell("b", "b")) and not any(o.correct for o in metrics.mistakes)
    # Every non-empty cell: mistakes by count, then the diagonal in class order.
    assert metrics.cells() == [("c", "a", 2), ("a", "b", 1), ("b", "a", 1), ("a", "a", 2), ("b", "b", 1)]
    assert sum(count for *_, count in metrics.cells()) == len(items)
