"""What a backbone's embeddings say about a set of images: neighbours, near-duplicates, maps, clusters, a score.

- `embed` runs every image of a set through an Embedder (core.features.embedding) in batches: decoded images
  live for one batch only, so memory grows with the number of images by one feature vector each
  (5 KB for 1280 numbers) and a thumbnail when asked for. A file that cannot be read or decoded
  becomes a `Failure` with its reason; the rest go through.
- Similarity is the cosine of two embeddings. Nearest neighbours are the most similar images.
- Near-duplicates: the pairs at least as similar as a threshold, grouped as connected components (a
  copy of a copy joins the group), by scipy.sparse.csgraph. `similar_pairs` finds every pair above a
  floor once, block by block; then any threshold above the floor is grouped at once (a slider).
- Maps: PCA (instant) and t-SNE (scikit-learn; refused above TSNE_MAX_IMAGES, measured), both on the
  unit vectors, so that distances on the map follow the cosine.
- k-means clusters, and how well a backbone separates labelled classes: leave-one-out k-NN accuracy,
  each labelled image classified by the vote of its k most similar other images.

scikit-learn and scipy are imported inside the functions that use them (start-up time, DESIGN.md).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from core.classify.predict import Failure
from core.datasets.sources import ImageSource, SourceSet
from core.errors import ZooScopeError
from core.features.embedding import Embedded, Embedder, embed_encoded
from core.progress import Progress

DEFAULT_BATCH_SIZE = 32
# Chosen from measurements (bench/bench_duplicates.py, README "Near-duplicates"): halfway between the most
# similar pair of distinct photos and the least similar planted copy (a half-size JPEG re-saved at quality 75,
# a 90% crop, a mirror image) with efficientnet_lite0.
DEFAULT_DUPLICATE_THRESHOLD = 0.61
MIN_MAP_IMAGES = 3  # a 2-D map of one or two images shows nothing a sentence cannot say
# t-SNE's time grows faster than the number of images; measured (bench/bench_features.py, wall clock, both
# cores of this 2-core machine): 4.7 s at 1,000 images, 11.5 s at 3,000; about twice that on one core, as
# on a small Community Cloud server. A page that waits longer looks broken. PCA has no limit.
TSNE_MAX_IMAGES = 3000
KNN_K = 5
PROJECTIONS = ("pca", "tsne")
PROJECTION_LABELS = {"pca": "PCA", "tsne": "t-SNE"}
# Pairs kept by `similar_pairs`: 2 million pairs are 24 MB (two int32 indices and a float32 each).
MAX_PAIRS = 2_000_000
_BLOCK_ENTRIES = 4_000_000  # similarities computed at once: 16 MB of float32


# --- embeddings -----------------------------------------------------------------------------------


@dataclass(eq=False)
class Embeddings:
    """The usable images of a set with their embeddings, and the files that could not be used.

    Rows of `files`, `labels`, `vectors` (and `thumbnails`) are the usable images, in input order;
    `positions` and `failures` say where each row and each failure stood in the input.
    """

    model: str
    files: list[str]
    labels: list[str | None]
    vectors: np.ndarray  # (N, D) float32: the penultimate layer
    failures: list[Failure] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)  # input position of each row
    failure_positions: list[int] = field(default_factory=list)
    failure_labels: list[str | None] = field(default_factory=list)  # the class folder of each failure, if any
    thumbnails: list[bytes] | None = None  # small JPEGs, when asked for
    runtime: str = "torch"

    def __len__(self) -> int:
        return len(self.files)

    @property
    def dimensions(self) -> int:
        return int(self.vectors.shape[1]) if self.vectors.ndim == 2 else 0

    @functools.cached_property
    def unit(self) -> np.ndarray:
        """The embeddings scaled to length 1: their dot products are the cosine similarities."""
        return unit_vectors(self.vectors)

    @property
    def classes(self) -> list[str]:
        return sorted({label for label in self.labels if label is not None})


def embed(
    embedder: Embedder,
    sources: SourceSet | Sequence[ImageSource],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    thumbnail_side: int | None = None,
    progress: Progress | None = None,
) -> Embeddings:
    """Every image of `sources` through `embedder`, `batch_size` at a time (its bytes are read then)."""
    images = sources.images if isinstance(sources, SourceSet) else list(sources)
    total = len(images)
    files: list[str] = []
    labels: list[str | None] = []
    chunks: list[np.ndarray] = []
    thumbnails: list[bytes] | None = [] if thumbnail_side else None
    positions: list[int] = []
    failures: list[tuple[int, Failure, str | None]] = []
    if progress:
        progress(0, total, f"Embedding {total:,} images with {embedder.name}")
    for start in range(0, total, batch_size):
        readable: list[tuple[int, ImageSource, bytes]] = []
        for position, source in enumerate(images[start : start + batch_size], start=start):
            try:
                readable.append((position, source, source.read()))
            except OSError as error:
                reason = f"Could not read the file: {_reason(error)}."
                failures.append((position, Failure(source.name, reason), source.label))
        results = embed_encoded(embedder, [data for _, _, data in readable], thumbnail_side=thumbnail_side)
        vectors = []
        for (position, source, _), result in zip(readable, results, strict=True):
            if not isinstance(result, Embedded):
                failures.append((position, Failure(source.name, str(result)), source.label))
                continue
            files.append(source.name)
            labels.append(source.label)
            positions.append(position)
            vectors.append(result.vector)
            if thumbnails is not None:
                thumbnails.append(jpeg_bytes(result.thumbnail))
        if vectors:
            chunks.append(np.stack(vectors))
        done = min(start + batch_size, total)
        if progress:
            progress(done, total, f"Embedded {done:,} of {total:,} images with {embedder.name}")
    failures.sort(key=lambda item: item[0])
    dimensions = embedder.feature_dim or (chunks[0].shape[1] if chunks else 0)
    return Embeddings(
        model=embedder.name,
        files=files,
        labels=labels,
        vectors=np.concatenate(chunks) if chunks else np.empty((0, dimensions), np.float32),
        failures=[failure for _, failure, _ in failures],
        positions=positions,
        failure_positions=[position for position, _, _ in failures],
        failure_labels=[label for _, _, label in failures],
        thumbnails=thumbnails,
        runtime=embedder.runtime,
    )


def _reason(error: OSError) -> str:
    return str(error.strerror or error).rstrip(".")


def jpeg_bytes(image, quality: int = 80) -> bytes:
    """A small RGB image as JPEG bytes (thumbnails: a few KB each, kept for a whole set)."""
    import io

    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


# --- similarity -----------------------------------------------------------------------------------


def unit_vectors(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (float32); a row of zeros stays zeros (similar to nothing)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


@dataclass(frozen=True)
class Neighbour:
    index: int  # row in the Embeddings
    file: str
    similarity: float

    def as_json(self) -> dict:
        return {"file": self.file, "similarity": round(self.similarity, 6)}


def most_similar(embeddings: Embeddings, query: np.ndarray, k: int, *, exclude: int | None = None) -> list[Neighbour]:
    """The `k` images most similar to the embedding `query` (cosine), best first; ties keep input order."""
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    similarity = embeddings.unit @ unit_vectors(np.asarray(query, np.float32).reshape(1, -1))[0]
    if exclude is not None:
        similarity[exclude] = -np.inf
    order = np.argsort(-similarity, kind="stable")
    best = [int(i) for i in order if i != exclude][:k]
    return [Neighbour(index, embeddings.files[index], float(similarity[index])) for index in best]


def neighbours(embeddings: Embeddings, index: int, k: int) -> list[Neighbour]:
    """The `k` other images most similar to image `index`, best first."""
    return most_similar(embeddings, embeddings.vectors[index], k, exclude=index)


# --- near-duplicates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimilarPairs:
    """Every pair of images (first < second) at least `floor` similar, of `count` images.

    When more than MAX_PAIRS pairs pass the asked-for floor, only the most similar are kept and
    `floor` is raised to the least similar one kept: grouping is exact for any threshold >= floor.
    """

    first: np.ndarray  # int32
    second: np.ndarray  # int32
    similarity: np.ndarray  # float32
    floor: float
    count: int


def similar_pairs(unit: np.ndarray, floor: float, *, max_pairs: int = MAX_PAIRS) -> SimilarPairs:
    """The pairs of rows of `unit` (unit vectors) whose cosine is at least `floor`, found block by block
    (at most 16 MB of similarities at a time) and never more than `max_pairs` of them."""
    count = len(unit)
    rows = max(1, _BLOCK_ENTRIES // max(count, 1))
    kept_first, kept_second, kept_similarity = [], [], []
    kept = 0
    for start in range(0, count, rows):
        block = unit[start : start + rows] @ unit.T  # (rows, count)
        i, j = np.nonzero(block >= floor)
        i = i + start
        upper = j > i  # each pair once, never an image with itself
        i, j = i[upper], j[upper]
        kept_first.append(i.astype(np.int32))
        kept_second.append(j.astype(np.int32))
        kept_similarity.append(block[i - start, j].astype(np.float32))
        kept += len(i)
        if kept > max_pairs:  # keep at most the max_pairs most similar: the floor rises above the rest
            first, second, similarity = (np.concatenate(a) for a in (kept_first, kept_second, kept_similarity))
            cut = np.partition(similarity, len(similarity) - max_pairs)[len(similarity) - max_pairs]
            floor = float(np.nextafter(cut, np.float32(2)))  # every pair at the cut goes, ties included
            keep = np.flatnonzero(similarity >= floor)
            kept_first, kept_second, kept_similarity = [first[keep]], [second[keep]], [similarity[keep]]
            kept = len(keep)
    first, second, similarity = (
        np.concatenate(a) if a else np.empty(0, dtype) for a, dtype in
        ((kept_first, np.int32), (kept_second, np.int32), (kept_similarity, np.float32))
    )  # fmt: skip
    return SimilarPairs(first, second, similarity, float(floor), count)


def duplicate_groups(pairs: SimilarPairs, threshold: float) -> list[list[int]]:
    """Images linked by pairs at least `threshold` similar, as groups of two or more (connected
    components): biggest first, each in input order."""
    if threshold < pairs.floor - 1e-9:
        raise ValueError(f"threshold {threshold} is below the pairs' floor {pairs.floor}")
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    keep = pairs.similarity >= threshold
    first, second = pairs.first[keep], pairs.second[keep]
    graph = coo_matrix((np.ones(len(first), np.int8), (first, second)), shape=(pairs.count, pairs.count))
    _, component = connected_components(graph, directed=False)
    sizes = np.bincount(component, minlength=1)
    groups: dict[int, list[int]] = {}
    for index, label in enumerate(component.tolist()):
        if sizes[label] > 1:
            groups.setdefault(label, []).append(index)
    return sorted(groups.values(), key=lambda members: (-len(members), members[0]))


def find_duplicates(embeddings: Embeddings, threshold: float = DEFAULT_DUPLICATE_THRESHOLD) -> list[list[int]]:
    """Near-duplicate groups at `threshold` (cosine similarity in [-1, 1])."""
    if not -1.0 <= threshold <= 1.0:
        raise ZooScopeError(f"The threshold is a cosine similarity between -1 and 1, not {threshold:g}.")
    pairs = similar_pairs(embeddings.unit, threshold)
    if pairs.floor > threshold:
        raise ZooScopeError(
            f"At {threshold:g}, more than {MAX_PAIRS:,} pairs of images count as near-duplicates; "
            f"use a threshold of at least {pairs.floor:.3f}."
        )
    return duplicate_groups(pairs, threshold)


def group_similarity(embeddings: Embeddings, members: Sequence[int]) -> float:
    """The lowest similarity between two images of a group (how far its loosest pair is apart)."""
    unit = embeddings.unit[list(members)]
    similarity = unit @ unit.T
    return float(similarity[np.triu_indices(len(members), 1)].min()) if len(members) > 1 else 1.0


# --- maps and clusters ----------------------------------------------------------------------------


def no_map_reason(count: int) -> str | None:
    """Why a set of `count` images gets no map, or None."""
    if count >= MIN_MAP_IMAGES:
        return None
    images = "one image" if count == 1 else f"{count} images"
    return (
        f"With {images} there is no map: a map shows how many images spread out, and needs at least "
        f"{MIN_MAP_IMAGES}. The similarities below say all there is."
    )


def projection_refusal(method: str, count: int) -> str | None:
    """Why `method` will not map `count` images (with what to do instead), or None."""
    if method == "tsne" and count > TSNE_MAX_IMAGES:
        return (
            f"t-SNE maps at most {TSNE_MAX_IMAGES:,} images here: its time grows faster than the number of "
            f"images (about 12 s at {TSNE_MAX_IMAGES:,} on two cores, measured), and this set has {count:,}. "
            "PCA maps any number at once."
        )
    return None


def project(unit: np.ndarray, method: str = "pca", *, seed: int = 0) -> np.ndarray:
    """(N, 2) map coordinates of unit vectors by PCA or t-SNE (scikit-learn); ZooScopeError if refused."""
    if method not in PROJECTIONS:
        raise ValueError(f"method must be one of {PROJECTIONS}, not {method!r}")
    count = len(unit)
    if reason := no_map_reason(count) or projection_refusal(method, count):
        raise ZooScopeError(reason)
    from sklearn.decomposition import PCA

    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(unit).astype(np.float32)
    from sklearn.manifold import TSNE

    # PCA to 50 dimensions first (t-SNE's own advice): the neighbourhoods barely change, the time drops.
    reduced = PCA(n_components=min(50, count, unit.shape[1]), random_state=seed).fit_transform(unit)
    perplexity = max(1.0, min(30.0, (count - 1) / 3))  # below the number of images, as t-SNE requires
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return tsne.fit_transform(reduced).astype(np.float32)


def clusters(unit: np.ndarray, k: int, *, seed: int = 0) -> np.ndarray:
    """k-means cluster of each row (0..k-1; fewer clusters when there are fewer images)."""
    from sklearn.cluster import KMeans

    k = max(1, min(k, len(unit)))
    return KMeans(n_clusters=k, n_init="auto", random_state=seed).fit_predict(unit).astype(np.int32)


# --- how well a backbone separates classes --------------------------------------------------------


@dataclass(frozen=True)
class KnnScore:
    """Leave-one-out k-NN accuracy over the labelled images."""

    accuracy: float
    correct: int
    images: int
    classes: int
    k: int


def knn_accuracy(embeddings: Embeddings, k: int = KNN_K) -> KnnScore | None:
    """Each labelled image classified by the vote of its `k` most similar other labelled images (cosine);
    a tie goes to the class whose voters are the more similar in all. None with fewer than 2 classes."""
    labelled = [(index, label) for index, label in enumerate(embeddings.labels) if label is not None]
    rows = [index for index, _ in labelled]
    labels = [label for _, label in labelled]
    classes = sorted(set(labels))
    if len(classes) < 2:
        return None
    from sklearn.neighbors import NearestNeighbors

    k = min(k, len(rows) - 1)
    unit = embeddings.unit[rows]
    # Without a query, kneighbors leaves each image out of its own neighbours (leave-one-out).
    finder = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(unit)
    distances, indices = finder.kneighbors()
    correct = 0
    for row, (distance, found) in enumerate(zip(distances, indices, strict=True)):
        votes: Counter[str] = Counter()
        weight: Counter[str] = Counter()
        for d, neighbour in zip(distance, found, strict=True):
            votes[labels[neighbour]] += 1
            weight[labels[neighbour]] += 1.0 - d
        predicted = max(votes, key=lambda label: (votes[label], weight[label]))
        correct += predicted == labels[row]
    return KnnScore(correct / len(rows), correct, len(rows), len(classes), k)
