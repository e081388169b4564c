"""A backbone without its head: the one way ZooScope turns images into feature vectors (embeddings).

An image's embedding is the model's penultimate layer, what its final Linear classifier reads
(the family table's `head`, core.models.families). `embedder_for(handle.torch, runtime=handle.runtime)`
makes one from a catalogue model as the app and the command line load it (core.engines.handle.ModelHandle):
a private view of the shared model with the head replaced by Identity (core.features.backbone.backbone_view),
run by ONNX Runtime where the handle runs there and that view's export is verified (features within 1e-4 of
PyTorch's, core.features.backbone.frozen_features), else by PyTorch.

Images reach it as they reach Classify: decoded by core.images.decode_image at the reduced size that
core.preprocessing.decode_side allows, then the weights' own transforms (core.classify.predict.preprocess:
core.preprocessing.model_batch on the CPU, the transforms on the device for CUDA). Fine-tuning's fast
mode (core.finetune.extraction), the Features page and the command line (core.features.analysis), and batch
jobs all go through `Embedder.embed_images`, or `embed_encoded` from bytes: one extraction, one set of
numbers.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from core.classify import predict
from core.errors import ImageError, ZooScopeError
from core.features.backbone import backbone_view, frozen_features, head_path
from core.images import decode_image
from core.models import footprints
from core.models.family_paths import get_layer
from core.models.loading import LoadedModel
from core.preprocessing import Transform, decode_side
from core.progress import Progress

Forward = Callable[[torch.Tensor], torch.Tensor]


def forward_features(forward: Forward, batch: torch.Tensor) -> torch.Tensor:
    """One frozen forward: (N, D) float32 features on the CPU. Every embedding is computed here."""
    with torch.inference_mode():
        return forward(batch).float().cpu()


@dataclass(frozen=True, eq=False)
class Embedder:
    """Images in, penultimate-layer features out, for one backbone in one runtime."""

    name: str  # the backbone's catalogue name
    forward: Forward  # preprocessed batch -> (N, feature_dim)
    preprocess: Transform  # the weights' own transforms
    device: torch.device = torch.device("cpu")
    feature_dim: int | None = None  # known when made from a catalogue model
    runtime: str = "torch"  # what runs `forward`: "torch" or "onnx"

    @functools.cached_property
    def decode_side(self) -> int | None:
        """The short side a JPEG may be decoded at and still serve the transforms (core.preprocessing)."""
        return decode_side([self.preprocess])

    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(N, feature_dim) float32 features of decoded images, on the CPU, in order."""
        if not images:
            return torch.empty(0, self.feature_dim or 0)
        return forward_features(self.forward, predict.preprocess(self, images))

    def decode(self, data: bytes) -> Image.Image:
        """`data` decoded as Classify decodes it (ImageError with a sentence a person can read)."""
        return decode_image(data, min_side=self.decode_side)


@dataclass(frozen=True)
class Embedded:
    """One image's embedding, and its thumbnail when one was asked for."""

    vector: np.ndarray  # (feature_dim,) float32
    thumbnail: Image.Image | None = None


def embed_encoded(
    embedder: Embedder, blobs: Sequence[bytes], *, thumbnail_side: int | None = None
) -> list[Embedded | ImageError]:
    """Encoded images -> one Embedded per image, or the ImageError that kept it out; one batch.

    Decoded images live only for this call, so a caller that feeds batches keeps memory flat.
    """
    results: list[Embedded | ImageError | None] = [None] * len(blobs)
    decoded: list[tuple[int, Image.Image]] = []
    for index, data in enumerate(blobs):
        try:
            decoded.append((index, embedder.decode(data)))
        except ImageError as error:
            results[index] = error
    if decoded:
        vectors = embedder.embed_images([image for _, image in decoded]).numpy()
        for (index, image), vector in zip(decoded, vectors, strict=True):
            small = _thumbnail(image, thumbnail_side) if thumbnail_side else None
            results[index] = Embedded(vector, small)
    return [result for result in results if result is not None]  # every slot is filled above


def _thumbnail(image: Image.Image, side: int) -> Image.Image:
    small = image.copy()
    small.thumbnail((side, side), Image.Resampling.BILINEAR)  # only ever shrinks
    return small


def _no_head_message(name: str) -> str:
    return (
        f"{name} has no linear classifier, so it has no penultimate layer to take features from here; "
        "choose another model."
    )


def build_embedder(loaded: LoadedModel, *, runtime: str = "torch", progress: Progress | None = None) -> Embedder:
    """An Embedder for `loaded` (a handle's torch face) made now; where the handle runs in ONNX Runtime
    (`runtime`), its features come from there too (core.features.backbone.frozen_features).

    ZooScopeError for a family with no linear head (squeezenet): it has no penultimate layer here.
    """
    spec = loaded.spec
    if spec.traits.head is None:
        raise ZooScopeError(_no_head_message(spec.name))
    view = backbone_view(loaded)
    forward = frozen_features(loaded, view, runtime=runtime, progress=progress)
    return Embedder(
        name=spec.name,
        feature_dim=view.feature_dim,
        forward=forward,
        preprocess=loaded.preprocess,
        device=torch.device(loaded.device),
        runtime="torch" if forward is view.module else "onnx",
    )


# One embedder per shared model and runtime, dropped with the model when the pool unloads it: an
# ONNX Runtime feature session holds its own copy of the weights, so it is made once, not per page run.
_embedders: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_embedders_lock = threading.Lock()


def embedder_for(loaded: LoadedModel, *, runtime: str = "torch", progress: Progress | None = None) -> Embedder:
    """The Embedder of the shared `loaded` (a handle's torch face) in `runtime` (the handle's), made on first
    use and kept with it."""
    with _embedders_lock:
        known = _embedders.setdefault(loaded.module, {})
        if runtime not in known:
            known[runtime] = build_embedder(loaded, runtime=runtime, progress=progress)
        return known[runtime]


def embedding_memory_mb(
    loaded: LoadedModel, images: int, *, runtime: str = "torch", batch_size: int, thumbnail_side: int = 0
) -> float:
    """What embedding `images` images through the shared `loaded` will hold, estimated before it starts
    (core.models.footprints): activations at `batch_size`, the (n, d) result and thumbnails; plus a first
    ONNX export of its feature extractor where this process has no embedder for it in `runtime` yet."""
    spec = loaded.spec
    head = get_layer(loaded.module, head_path(spec), spec.name)
    dimensions = int(getattr(head, "in_features", 0)) or 4096  # a head that is no Linear is refused later
    need = footprints.embedding_mb(
        params=spec.num_params,
        input_size=spec.input_size,
        family=spec.family,
        images=images,
        dimensions=dimensions,
        batch=batch_size,
        thumbnail_side=thumbnail_side,
    )
    with _embedders_lock:
        built = runtime in _embedders.get(loaded.module, {})
    if runtime != "torch" and not built:
        need += footprints.export_mb(
            params=spec.num_params, input_size=spec.input_size, family=spec.family, engine="onnx", weights_loaded=True
        )
    return need
