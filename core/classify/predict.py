"""Images in, top-k out: the weights' own preprocessing, batched forwards, plain results."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from PIL import Image

from core.classify.classifier import Classifier, Preprocessing
from core.errors import ImageError
from core.images import decode_image, thumbnail
from core.preprocessing import centre_for_model, decode_side, model_batch
from core.progress import Progress

DEFAULT_TOP_K = 5
MAX_TOP_K = 20
DEFAULT_BATCH_SIZE = 16


@dataclass(frozen=True)
class Prediction:
    rank: int
    label: str
    probability: float
    class_index: int


@dataclass(frozen=True)
class Classification:
    """One image's top-k from one model."""

    file: str
    model: str
    predictions: tuple[Prediction, ...]
    latency_ms: float  # this image's share of its batch: preprocess + forward + top-k
    thumbnail: Image.Image | None = field(default=None, compare=False, repr=False)
    threshold: float | None = None  # a fine-tuned model's "not sure" threshold (core.finetune.threshold)
    batch_size: int = 1  # how many images shared the batch whose time latency_ms is a share of
    # A fine-tuned model that remembers its training images (core.finetune.familiarity): the cosine similarity
    # of the nearest one, and the least a photo needs to count as like them.
    similarity: float | None = None
    min_similarity: float | None = None

    @property
    def top1(self) -> Prediction:
        return self.predictions[0]

    @property
    def unlike_training(self) -> bool:
        """The photo is farther from every training image than the model's minimum similarity (0: off)."""
        return (
            self.similarity is not None
            and self.min_similarity is not None
            and self.min_similarity > 0
            and self.similarity < self.min_similarity
        )

    @property
    def not_sure_why(self) -> str | None:
        """Why the answer is "not sure": "unlike_training" (checked first), "low_confidence", or None."""
        if self.unlike_training:
            return "unlike_training"
        return "low_confidence" if self.below_threshold else None

    @property
    def below_threshold(self) -> bool:
        """The top-1 probability is below the model's threshold: the answer is "not sure: low confidence"."""
        return self.threshold is not None and self.top1.probability < self.threshold

    def as_json(self) -> dict:
        report = {
            "file": self.file,
            "model": self.model,
            "predictions": [{"label": p.label, "probability": p.probability} for p in self.predictions],
            "latency_ms": round(self.latency_ms, 3),
        }
        if self.threshold is not None:
            report.update(threshold=self.threshold, below_threshold=self.below_threshold)
            if self.similarity is not None:
                report.update(similarity=round(self.similarity, 4), min_similarity=self.min_similarity)
            report.update(not_sure=self.not_sure_why is not None, not_sure_why=self.not_sure_why)
        return report


@dataclass(frozen=True)
class Failure:
    """A file that could not be classified, with a reason a person can act on."""

    file: str
    error: str

    def as_json(self) -> dict:
        return {"file": self.file, "error": self.error}


def preprocess(model: Preprocessing, images: Sequence[Image.Image]) -> torch.Tensor:
    """A batch tensor made by the weights' own transforms (resize, crop, normalise).

    On the CPU, the transforms run on the PIL images, resizing only the crop the model sees (see
    core.preprocessing). For a model on CUDA they run on the GPU instead (see
    `preprocess_on_device`) and the batch comes back on the GPU.
    """
    if _on_cuda(model):
        return preprocess_on_device(model, images, model.device)
    return model_batch(images, model.preprocess)


def preprocess_on_device(
    model: Preprocessing, images: Sequence[Image.Image], device: torch.device | str
) -> torch.Tensor:
    """The weights' own transforms run on `device`, on each image's uint8 pixels.

    Resizing a photo costs several times a GPU's forward pass when done on the CPU, so for CUDA
    each decoded image's pixels (uint8, a quarter of the float crop's bytes per pixel) are copied
    once from pinned memory, asynchronously, and torchvision's same transform (resize with
    antialiasing, centre crop, scale, normalise) runs on the tensor on the GPU. Its resize differs
    from PIL's by rounding only (same top-1 on the check's photos, tests/unit/test_gpu_path.py).
    """
    device = torch.device(device)
    batch = []
    for image in images:
        image = centre_for_model(image)
        pixels = torch.from_numpy(np.array(image if image.mode == "RGB" else image.convert("RGB")))
        if device.type == "cuda":
            pixels = pixels.pin_memory()
        chw = pixels.to(device, non_blocking=True).permute(2, 0, 1)
        batch.append(model.preprocess(chw))
    return torch.stack(batch)


def _on_cuda(model: Preprocessing) -> bool:
    return torch.device(model.device).type == "cuda"


def probabilities(model: Classifier, batch: torch.Tensor) -> torch.Tensor:
    """Softmax over the classes, on the CPU, always in float32 (whatever precision the forward ran in)."""
    with torch.inference_mode():
        return model.forward(batch).float().softmax(dim=1).cpu()


def top_k(probs: torch.Tensor, categories: Sequence[str], k: int) -> list[tuple[Prediction, ...]]:
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    values, indices = probs.topk(min(k, probs.shape[1]), dim=1)
    return [
        tuple(
            Prediction(rank=rank + 1, label=categories[index], probability=float(value), class_index=int(index))
            for rank, (value, index) in enumerate(zip(row_values.tolist(), row_indices.tolist(), strict=False))
        )
        for row_values, row_indices in zip(values, indices, strict=False)
    ]


def classify_images(
    model: Classifier,
    images: Sequence[Image.Image],
    names: Sequence[str],
    *,
    k: int = DEFAULT_TOP_K,
    thumbnails: bool = False,
) -> list[Classification]:
    """Classify decoded images as one batch."""
    start = time.perf_counter()
    ranked = top_k(probabilities(model, preprocess(model, images)), model.categories, k)
    per_image_ms = (time.perf_counter() - start) * 1000 / max(len(images), 1)
    return [
        Classification(
            file=name,
            model=model.name,
            predictions=predictions,
            latency_ms=per_image_ms,
            thumbnail=thumbnail(image) if thumbnails else None,
            batch_size=len(images),
        )
        for name, image, predictions in zip(names, images, ranked, strict=False)
    ]


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def classify_files(
    model: Classifier,
    files: Sequence[tuple[str, bytes]],
    *,
    k: int = DEFAULT_TOP_K,
    batch_size: int = DEFAULT_BATCH_SIZE,
    thumbnails: bool = False,
    progress: Progress | None = None,
) -> list[Classification | Failure]:
    """Classify (name, bytes) pairs in batches; a file that fails becomes a Failure, in place.

    Decoded images live only for their batch, so memory stays flat however many files come in.
    """
    results: dict[int, Classification | Failure] = {}
    side = decode_side([model.preprocess])  # a big JPEG need not decode at full size
    for chunk_start, chunk in zip(range(0, len(files), batch_size), _chunks(files, batch_size), strict=False):
        decoded: list[tuple[int, str, Image.Image]] = []
        for offset, (name, data) in enumerate(chunk):
            try:
                decoded.append((chunk_start + offset, name, decode_image(data, min_side=side)))
            except ImageError as error:
                results[chunk_start + offset] = Failure(file=name, error=str(error))
        if decoded:
            indices, names, images = zip(*decoded, strict=False)
            for index, result in zip(
                indices, classify_images(model, images, names, k=k, thumbnails=thumbnails), strict=False
            ):
                results[index] = result
            del images  # else this batch's pixels stay alive while the next batch decodes
        if progress:
            done = min(chunk_start + batch_size, len(files))
            progress(done, len(files), f"Classified {done} of {len(files)} images with {model.name}")
    return [results[index] for index in range(len(files))]


def predictions_frame(results: Sequence[Classification | Failure]) -> pd.DataFrame:
    """Every top-k row of every classified image: the CSV download."""
    rows = [
        {
            "file": result.file,
            "model": result.model,
            "rank": prediction.rank,
            "label": prediction.label,
            "probability": prediction.probability,
            "latency_ms": result.latency_ms,
        }
        for result in results
        if isinstance(result, Classification)
        for prediction in result.predictions
    ]
    return pd.DataFrame(rows, columns=["file", "model", "rank", "label", "probability", "latency_ms"])


def top_k_frame(result: Classification) -> pd.DataFrame:
    """One image's top-k as a table: rank, label, probability."""
    return pd.DataFrame(
        [{"rank": p.rank, "label": p.label, "probability": p.probability} for p in result.predictions],
        columns=["rank", "label", "probability"],
    )


def summary_frame(results: Sequence[Classification | Failure]) -> pd.DataFrame:
    """One row per file: top-1, confidence and latency, or the reason it failed."""
    rows = [
        {
            "file": r.file,
            "top1": r.top1.label,
            "confidence": r.top1.probability,
            "latency_ms": r.latency_ms,
            "error": "",
        }
        if isinstance(r, Classification)
        else {"file": r.file, "top1": None, "confidence": None, "latency_ms": None, "error": r.error}
        for r in results
    ]
    return pd.DataFrame(rows, columns=["file", "top1", "confidence", "latency_ms", "error"])
