"""core.features.analysis with the real bundled model: planted near-duplicates, similar-image search, k-NN against a
logistic probe; and its parts on numbers made for the purpose: groups, neighbours, maps, scores, streaming."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from torchvision.transforms._presets import ImageClassification

from core.datasets.sources import ImageSource, SourceSet, from_uploads
from core.engines.choice import load_handle
from core.errors import ImageError, ZooScopeError
from core.features import analysis as features
from core.features.analysis import (
    DEFAULT_DUPLICATE_THRESHOLD,
    TSNE_MAX_IMAGES,
    Embeddings,
    duplicate_groups,
    embed,
    find_duplicates,
    knn_accuracy,
    most_similar,
    neighbours,
    no_map_reason,
    project,
    projection_refusal,
    similar_pairs,
    unit_vectors,
)
from core.features.embedding import Embedder, build_embedder, embed_encoded, embedder_for
from core.models.keys import ModelKey
from tests.faces import lfw_pngs
from tests.planted import planted_set

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def lite0_onnx() -> Embedder:
    """The default backbone as the app runs it: EfficientNet-Lite0 features through ONNX Runtime."""
    model = load_handle(ModelKey("efficientnet_lite0"), runtime_choice="onnx")
    embedder = embedder_for(model.torch, runtime=model.runtime)
    assert embedder.runtime == "onnx" and embedder.feature_dim == 1280
    return embedder


@pytest.fixture(scope="module")
def planted(lite0_onnx) -> Embeddings:
    return embed(lite0_onnx, from_uploads([(item.name, item.data) for item in planted_set()]))


def made(vectors, labels=None, files=None) -> Embeddings:
    vectors = np.asarray(vectors, np.float32)
    n = len(vectors)
    return Embeddings(
        model="test",
        files=files or [f"{i}.png" for i in range(n)],
        labels=labels or [None] * n,
        vectors=vectors,
        positions=list(range(n)),
    )


# --- measured quality with the real model -----------------------------------------------------------


def test_every_planted_copy_is_found_at_the_default_threshold_with_no_false_merge(planted):
    items = planted_set()
    assert len(planted) == len(items) == 22 * 4 and not planted.failures
    groups = find_duplicates(planted, DEFAULT_DUPLICATE_THRESHOLD)
    as_photos = sorted(sorted(items[k].name for k in group) for group in groups)
    expected = sorted(
        sorted(item.name for item in items if item.photo == photo) for photo in dict.fromkeys(i.photo for i in items)
    )
    assert as_photos == expected  # each photo with its three copies, and nothing else


def test_the_default_threshold_lies_in_the_measured_gap(planted):
    items = planted_set()
    photo = np.array([item.photo for item in items])
    similarity = planted.unit @ planted.unit.T
    copies = [similarity[i, j] for i, j in itertools.combinations(range(len(items)), 2) if photo[i] == photo[j]]
    distinct = similarity[np.triu(photo[:, None] != photo[None, :], 1)]
    assert distinct.max() < DEFAULT_DUPLICATE_THRESHOLD < min(copies)


def test_similar_image_search_finds_the_original_of_each_copy_first(planted):
    items = planted_set()
    originals = [i for i, item in enumerate(items) if item.alteration is None]
    library = Embeddings(
        model=planted.model,
        files=[items[i].name for i in originals],
        labels=[None] * len(originals),
        vectors=planted.vectors[originals],
        positions=list(range(len(originals))),
    )
    for index, item in enumerate(items):
        if item.alteration is None:
            continue
        best, second = most_similar(library, planted.vectors[index], k=2)
        assert best.file == f"{item.photo}.jpg", (item.name, best, second)
        assert best.similarity > second.similarity


def test_knn_accuracy_is_close_to_a_logistic_probe(lite0_onnx):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    faces, others = lfw_pngs()
    images = [ImageSource(f"face/{i}.png", "face", lambda d=d: d) for i, d in enumerate(faces)]
    images += [ImageSource(f"other/{i}.png", "other", lambda d=d: d) for i, d in enumerate(others)]
    embeddings = embed(lite0_onnx, SourceSet(images=images))
    score = knn_accuracy(embeddings)
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    probe = cross_val_score(LogisticRegression(max_iter=2000), embeddings.unit, embeddings.labels, cv=folds).mean()
    assert (score.images, score.classes, score.k) == (200, 2, 5)
    assert score.accuracy >= 0.9 and abs(score.accuracy - probe) <= 0.05, (score, probe)


def test_onnx_runtime_embeddings_match_pytorch(lite0, lite0_onnx, planted):
    in_torch = build_embedder(lite0)
    assert in_torch.runtime == "torch"
    blobs = [item.data for item in planted_set()[:8]]
    ours = np.stack([result.vector for result in embed_encoded(lite0_onnx, blobs)])
    reference = np.stack([result.vector for result in embed_encoded(in_torch, blobs)])
    np.testing.assert_allclose(ours, reference, atol=1e-4)
    np.testing.assert_allclose(ours, planted.vectors[:8], atol=1e-6)  # the same numbers in a bigger batch


def test_the_embedder_is_made_once_per_model_and_runtime(lite0):
    assert embedder_for(lite0) is embedder_for(lite0)
    assert embedder_for(lite0).feature_dim == 1280


def test_a_model_without_a_linear_head_has_no_embedder():
    class Squeezenet:
        spec = type("Spec", (), {"name": "squeezenet1_0", "traits": type("T", (), {"head": None})()})()

    with pytest.raises(ZooScopeError, match="squeezenet1_0 has no linear classifier"):
        build_embedder(Squeezenet())


# --- bad input and scale ----------------------------------------------------------------------------


class Tiny(nn.Module):
    """A small random-weight backbone: 8 numbers per image."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, stride=2)

    def forward(self, x):
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


def png(i: int, size: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (i * 37 % 256, i * 91 % 256, i * 53 % 256)).save(buffer, "PNG")
    return buffer.getvalue()


def tiny_embedder(events: list) -> Embedder:
    model = Tiny().eval()

    def forward(batch):
        events.append(("forward", len(batch)))
        return model(batch)

    return Embedder("tiny", forward, ImageClassification(crop_size=32, resize_size=32), feature_dim=8)


def test_five_thousand_images_stream_in_batches_with_progress():
    events: list = []
    broken = {999, 4321}

    def reader(i: int):
        def read() -> bytes:
            events.append(("read", i))
            return b"not an image" if i in broken else png(i)

        return read

    images = [ImageSource(f"{i}.png", None, reader(i)) for i in range(5000)]
    reports = []
    embeddings = embed(tiny_embedder(events), images, batch_size=32, progress=lambda *a: reports.append(a))

    assert len(embeddings) == 4998 and embeddings.vectors.shape == (4998, 8)
    assert [(f.file, f.error) for f in embeddings.failures] == [
        ("999.png", "The file looks like a text/HTML file, not an image."),
        ("4321.png", "The file looks like a text/HTML file, not an image."),
    ]
    assert embeddings.failure_positions == [999, 4321] and embeddings.positions[999] == 1000
    # Bounded memory: a file is read only when its batch comes, and no batch holds more than 32 images.
    reads_per_forward, reads = [], 0
    for kind, _ in events:
        if kind == "read":
            reads += 1
        else:
            reads_per_forward.append(reads)
            reads = 0
    assert len(reads_per_forward) == 157 and max(reads_per_forward) <= 32 and reads == 0
    assert max(count for kind, count in events if kind == "forward") <= 32
    done = [report[0] for report in reports]
    assert done == sorted(done) and done[0] == 0 and done[-1] == 5000 and len(done) == 1 + 157
    assert {report[1] for report in reports} == {5000}


def test_unreadable_files_are_reported_by_name_and_the_rest_go_through():
    def missing() -> bytes:
        raise FileNotFoundError(2, "No such file or directory")

    images = [
        ImageSource("a.png", "x", lambda: png(1)),
        ImageSource("gone.jpg", "x", missing),
        ImageSource("empty.png", "y", lambda: b""),
        ImageSource("b.png", "y", lambda: png(2)),
    ]
    embeddings = embed(tiny_embedder([]), images)
    assert embeddings.files == ["a.png", "b.png"] and embeddings.labels == ["x", "y"]
    assert [(f.file, f.error) for f in embeddings.failures] == [
        ("gone.jpg", "Could not read the file: No such file or directory."),
        ("empty.png", "The file is empty."),
    ]


def test_an_empty_set_gives_empty_embeddings_and_no_map():
    embeddings = embed(tiny_embedder([]), [])
    assert len(embeddings) == 0 and embeddings.vectors.shape == (0, 8) and not embeddings.failures
    assert find_duplicates(embeddings) == []
    for count in (0, 1, 2):
        with pytest.raises(ZooScopeError, match="there is no map"):
            project(np.eye(3, dtype=np.float32)[:count])
    assert no_map_reason(1).startswith("With one image there is no map")
    assert no_map_reason(2).startswith("With 2 images there is no map")
    assert no_map_reason(3) is None


def test_embed_encoded_keeps_each_result_in_its_place():
    results = embed_encoded(tiny_embedder([]), [png(1), b"%PDF-1.7", png(2)], thumbnail_side=8)
    assert isinstance(results[1], ImageError) and "PDF" in str(results[1])
    assert results[0].vector.shape == (8,) and results[0].thumbnail.size == (8, 8)
    assert not np.allclose(results[0].vector, results[2].vector)


# --- groups and neighbours --------------------------------------------------------------------------


def test_groups_are_connected_components_at_the_threshold():
    # a~b and b~c at 0.9+, a and c only 0.64 apart: one group (a copy of a copy); d alone.
    angle = np.arccos(0.9)
    vectors = [[1, 0, 0], [np.cos(angle), np.sin(angle), 0], [np.cos(2 * angle), np.sin(2 * angle), 0], [0, 0, 1]]
    embeddings = made(vectors)
    assert find_duplicates(embeddings, 0.9) == [[0, 1, 2]]
    assert find_duplicates(embeddings, 0.95) == []
    assert find_duplicates(embeddings, 0.6) == [[0, 1, 2]]
    assert find_duplicates(made([[1, 0], [1, 0], [0, 1], [0, 1], [0, 1]]), 0.99) == [[2, 3, 4], [0, 1]]


def test_similar_pairs_are_found_in_blocks(monkeypatch):
    rng = np.random.default_rng(0)
    unit = unit_vectors(rng.normal(size=(300, 16)))
    monkeypatch.setattr(features, "_BLOCK_ENTRIES", 1000)  # blocks of 3 rows
    pairs = similar_pairs(unit, 0.5)
    similarity = unit @ unit.T
    expected = {(i, j) for i, j in zip(*np.nonzero(np.triu(similarity >= 0.5, 1)), strict=True)}
    assert set(zip(pairs.first.tolist(), pairs.second.tolist(), strict=True)) == expected
    np.testing.assert_allclose(pairs.similarity, similarity[pairs.first, pairs.second], atol=1e-6)


def test_too_many_pairs_raise_the_floor_and_stay_exact_above_it():
    rng = np.random.default_rng(1)
    unit = unit_vectors(rng.normal(size=(200, 4)))
    everything = similar_pairs(unit, -1.0)
    capped = similar_pairs(unit, -1.0, max_pairs=500)
    assert len(capped.similarity) <= 500 and capped.floor > -1.0
    assert capped.similarity.min() >= capped.floor
    assert (everything.similarity >= capped.floor).sum() == len(capped.similarity)  # ties included or all out
    for threshold in (capped.floor, capped.floor + 0.01, 0.99):
        assert duplicate_groups(capped, threshold) == duplicate_groups(everything, threshold)
    with pytest.raises(ValueError, match="below the pairs' floor"):
        duplicate_groups(capped, capped.floor - 0.1)


def test_a_threshold_out_of_range_is_refused():
    with pytest.raises(ZooScopeError, match="between -1 and 1"):
        find_duplicates(made([[1, 0], [0, 1]]), 1.5)


def test_neighbours_exclude_the_image_itself_and_come_best_first():
    embeddings = made([[1, 0], [1, 0.1], [0, 1], [1, 0.5]])
    found = neighbours(embeddings, 0, 2)
    assert [n.index for n in found] == [1, 3]
    assert found[0].similarity == pytest.approx(1 / np.hypot(1, 0.1))
    assert [n.index for n in neighbours(embeddings, 0, 10)] == [1, 3, 2]  # k larger than the set
    assert most_similar(embeddings, np.array([0.0, 1.0]), 1)[0].file == "2.png"
    assert found[0].as_json() == {"file": "1.png", "similarity": round(found[0].similarity, 6)}
    with pytest.raises(ValueError):
        most_similar(embeddings, np.array([1.0, 0.0]), 0)


# --- maps, clusters and scores ----------------------------------------------------------------------


def clustered(per_class: int = 20, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centres = np.eye(3, 32) * 10
    vectors = np.concatenate([centre + rng.normal(size=(per_class, 32)) for centre in centres])
    return unit_vectors(vectors), [label for label in "abc" for _ in range(per_class)]


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_maps_keep_the_classes_apart(method):
    unit, labels = clustered()
    points = project(unit, method)
    assert points.shape == (60, 2) and points.dtype == np.float32
    score = knn_accuracy(made(points, labels), k=3)
    assert score.accuracy >= 0.95


def test_tsne_is_refused_above_its_measured_size_and_pca_still_maps():
    unit = unit_vectors(np.random.default_rng(0).normal(size=(TSNE_MAX_IMAGES + 1, 8)))
    reason = projection_refusal("tsne", len(unit))
    assert reason.startswith(f"t-SNE maps at most {TSNE_MAX_IMAGES:,} images here") and "PCA" in reason
    assert projection_refusal("tsne", TSNE_MAX_IMAGES) is None and projection_refusal("pca", 10**6) is None
    with pytest.raises(ZooScopeError, match="t-SNE maps at most"):
        project(unit, "tsne")
    assert project(unit, "pca").shape == (TSNE_MAX_IMAGES + 1, 2)


def test_kmeans_finds_the_clusters():
    unit, labels = clustered()
    found = features.clusters(unit, 3)
    assert len(set(found)) == 3
    for label in "abc":
        assert len({found[i] for i, value in enumerate(labels) if value == label}) == 1
    assert set(features.clusters(unit[:2], 5)) <= {0, 1}  # never more clusters than images


def test_knn_accuracy_leaves_each_image_out_of_its_own_vote():
    # With k=1 each 'a' is found by the other 'a'; the lone 'b' can only be found by an 'a': 2 of 3.
    score = knn_accuracy(made([[1, 0], [1, 0], [0.9, 0.1]], ["a", "a", "b"]), k=1)
    assert (score.correct, score.images, score.accuracy) == (2, 3, pytest.approx(2 / 3))


def test_knn_accuracy_counts_only_labelled_images_and_needs_two_classes():
    unit, labels = clustered(per_class=10)
    labels = [None if i % 5 == 0 else label for i, label in enumerate(labels)]
    score = knn_accuracy(made(unit, labels))
    assert (score.images, score.classes, score.accuracy) == (24, 3, 1.0)
    assert knn_accuracy(made(unit, ["a"] * len(unit))) is None
    assert knn_accuracy(made(unit)) is None
