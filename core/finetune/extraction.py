"""Backbone features for labelled images, computed once: a thread-safe cache shared across trainings."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
from PIL import Image

from core.datasets.labelled import LabelledImage
from core.errors import ImageError
from core.features.embedding import Embedder
from core.images import decode_image
from core.jobs.queue import give_way
from core.preprocessing import Transform
from core.progress import Progress

DEFAULT_CACHE_ENTRIES = 10_000  # 50 MB of 1280-d float32 features


class FeatureCache:
    """(backbone, image digest) -> 1-D feature tensor, least recently used entries dropped first.

    The backbone is its spec's slug ("resnet50", "resnet50-IMAGENET1K_V1"): two weights versions never share features.

    Thread-safe; shared across trainings (and sessions) so that a second training on the same
    images, or the same images with other settings, costs no forward pass.
    """

    def __init__(self, max_entries: int = DEFAULT_CACHE_ENTRIES):
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, not {max_entries}")
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[str, str], torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, backbone: str, digest: str) -> torch.Tensor | None:
        key = (backbone, digest)
        with self._lock:
            tensor = self._entries.get(key)
            if tensor is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return tensor

    def put(self, backbone: str, digest: str, features: torch.Tensor) -> None:
        key = (backbone, digest)
        value = features.detach().to("cpu", copy=True).contiguous()
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, key: tuple[str, str]) -> bool:
        with self._lock:
            return key in self._entries


def decode_item(item: LabelledImage, min_side: int | None = None) -> Image.Image:
    try:
        return decode_image(item.data, min_side=min_side)
    except ImageError as error:
        raise ImageError(f"{item.name}: {error}") from None


def extract_features(
    backbone_view: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    preprocess: Transform,
    items: Sequence[LabelledImage],
    *,
    backbone: str | None = None,
    batch_size: int = 32,
    cache: FeatureCache | None = None,
    progress: Progress | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Features (N, D) of `items`, in order, on the CPU. Only images missing from `cache` run forward.

    `backbone_view` maps a preprocessed batch to features: the PyTorch view, or its ONNX Runtime
    export (core.features.backbone.frozen_features).

    `backbone` names the backbone for the cache keys (required with a cache).
    """
    if cache is not None and not backbone:
        raise ValueError("extract_features needs the backbone name to use a feature cache")
    name = backbone or "backbone"  # always the backbone's own name where there is a cache
    found: dict[int, torch.Tensor] = {}
    if cache is not None:
        for index, item in enumerate(items):
            if (tensor := cache.get(name, item.digest)) is not None:
                found[index] = tensor
    missing = [index for index in range(len(items)) if index not in found]
    total = len(items)
    done = len(found)
    if progress:
        progress(done, total, f"Extracting features: {done} of {total} images")
    # The one extraction (core.features.embedding): the same decoding and preprocessing as Classify, so the
    # head is trained on exactly the features it will see in use.
    embedder = Embedder(name, backbone_view, preprocess, torch.device(device))
    for start in range(0, len(missing), batch_size):
        give_way()  # in a training, a visitor's short work goes first (core.jobs.queue)
        chunk = missing[start : start + batch_size]
        features = embedder.embed_images([decode_item(items[index], embedder.decode_side) for index in chunk])
        for index, row in zip(chunk, features, strict=True):
            found[index] = row
            if cache is not None:
                cache.put(name, items[index].digest, row)
        done += len(chunk)
        if progress:
            progress(done, total, f"Extracting features: {done} of {total} images")
    if not items:
        return torch.empty(0, 0)
    return torch.stack([found[index] for index in range(len(items))])
