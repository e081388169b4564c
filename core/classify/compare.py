"""Several models over the same images -> tidy pandas tables: top-k, agreement, latency, memory, meta.

Each file is decoded once; every model then runs over the decoded images in batches, one model at
a time, through the same `core.classify.predict` steps as the classify page (the weights' own transforms,
softmax, top-k). Full probability vectors are kept per (image, model) only until that image's
agreement and consensus are known.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import pandas as pd
import torch
from PIL import Image

from core.classify.classifier import Classifier
from core.classify.predict import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_TOP_K,
    Classification,
    Failure,
    preprocess,
    probabilities,
    top_k,
)
from core.engines.handle import ModelHandle
from core.errors import ImageError, ZooScopeError
from core.images import decode_image, thumbnail
from core.preprocessing import decode_side
from core.progress import Progress

MODEL_COLUMNS = [
    "model",
    "family",
    "runtime",
    "latency_ms",
    "agreement",
    "memory_mb",
    "acc1",
    "acc5",
    "params_m",
    "gflops",
    "size_mb",
    "input_size",
]
AGREEMENT_COLUMNS = ["file", "top1_agree", "shared_top_k", "consensus", "consensus_probability"]
PREDICTION_COLUMNS = ["file", "model", "rank", "label", "probability"]

T = TypeVar("T")


# --- agreement maths ------------------------------------------------------------------------------


def top1_agree(labels: Sequence[str]) -> bool:
    """Whether every model's top-1 label is the same (True for one model)."""
    return len(set(labels)) <= 1


def shared_top_k(label_sets: Sequence[Collection[str]]) -> set[str]:
    """The labels that are in every model's top-k (empty for no models)."""
    if not label_sets:
        return set()
    shared = set(label_sets[0])
    for labels in label_sets[1:]:
        shared &= set(labels)
    return shared


def _mean_probability(probabilities: Sequence[torch.Tensor]) -> torch.Tensor:
    """The per-class mean over models (float64: rounding in the sum hardly ever decides a near tie)."""
    if not probabilities:
        raise ValueError("consensus needs at least one model's probabilities")
    if any(p.dim() != 1 for p in probabilities) or len({p.shape[0] for p in probabilities}) != 1:
        shapes = [tuple(p.shape) for p in probabilities]
        raise ValueError(f"consensus needs 1-D probability vectors of equal length, not {shapes}")
    return torch.stack([p.detach().cpu().double() for p in probabilities]).mean(dim=0)


def _argmax(mean: torch.Tensor) -> int:
    # torch.argmax returns the first maximal index: a tie goes to the lowest class index.
    return int(torch.argmax(mean))


def consensus(probabilities: Sequence[torch.Tensor], categories: Sequence[str]) -> tuple[str, float]:
    """The label with the highest mean probability across models, and that mean.

    Ties go to the lowest class index, so the answer never depends on model order.
    """
    mean = _mean_probability(probabilities)
    if mean.shape[0] != len(categories):
        raise ValueError(f"{mean.shape[0]} probabilities but {len(categories)} categories")
    index = _argmax(mean)
    return categories[index], float(mean[index])


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency_ms(model: Classifier, batch: torch.Tensor, *, runs: int = 5, warmup: int = 1) -> float:
    """Median wall time in ms of `model.forward(batch)`, after `warmup` forwards.

    Only the forward pass is timed (the batch is on the device before the clock starts, in the
    model's layout); CUDA is synchronised around each run so the figure is the GPU's work, not the launch.
    """
    if runs < 1:
        raise ValueError(f"runs must be at least 1, not {runs}")
    times = []
    x = batch.to(model.device)
    if getattr(model, "channels_last", False):
        x = x.contiguous(memory_format=torch.channels_last)
    for _ in range(max(warmup, 0)):
        model.forward(x)
    for _ in range(runs):
        _synchronize(model.device)
        start = time.perf_counter()
        model.forward(x)
        _synchronize(model.device)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


# --- results --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageComparison:
    """One image seen by every model."""

    file: str
    results: dict[str, Classification]  # model name -> its top-k for this image
    top1_agree: bool
    shared_top_k: tuple[str, ...]  # labels in every model's top-k, highest mean probability first
    consensus: str  # highest mean probability across the models
    consensus_probability: float
    thumbnail: Image.Image | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class ModelStats:
    name: str
    family: str
    latency_ms: float | None  # None when no image could be decoded to measure it on
    memory_mb: float  # its weights as it holds them: PyTorch's tensors, or the ONNX Runtime session's copy
    acc1: float
    acc5: float
    params_m: float
    gflops: float
    size_mb: float  # the file it runs from: the weights file, or the ONNX export (int8: a quarter of it)
    input_size: int
    runtime: str = "torch"  # "torch", "onnx" or "int8" (core.runtime.ENGINES)
    # Share of the check photos on which its top-1 is PyTorch fp32's: None in PyTorch itself, 1.0 for
    # a verified ONNX export, measured for int8.
    agreement: float | None = None


@dataclass
class Comparison:
    models: list[str]
    images: list[ImageComparison]
    failures: list[Failure]  # files that could not be decoded, reported once
    stats: dict[str, ModelStats]
    # Images and failures interleaved in input order (as_json keeps it); empty: images, then failures.
    entries: list[ImageComparison | Failure] = field(default_factory=list, repr=False)

    def models_frame(self) -> pd.DataFrame:
        """One row per model: latency, memory and the weights' meta."""
        rows = []
        for name in self.models:
            s = self.stats[name]
            rows.append(
                {
                    "model": s.name,
                    "family": s.family,
                    "runtime": s.runtime,
                    "latency_ms": s.latency_ms,
                    "agreement": s.agreement,
                    "memory_mb": s.memory_mb,
                    "acc1": s.acc1,
                    "acc5": s.acc5,
                    "params_m": s.params_m,
                    "gflops": s.gflops,
                    "size_mb": s.size_mb,
                    "input_size": s.input_size,
                }
            )
        return pd.DataFrame(rows, columns=MODEL_COLUMNS)

    def agreement_frame(self) -> pd.DataFrame:
        """One row per compared image: agreement, consensus, then each model's top-1 label."""
        rows = [
            {
                "file": image.file,
                "top1_agree": image.top1_agree,
                "shared_top_k": len(image.shared_top_k),
                "consensus": image.consensus,
                "consensus_probability": image.consensus_probability,
                **{name: image.results[name].top1.label for name in self.models},
            }
            for image in self.images
        ]
        return pd.DataFrame(rows, columns=AGREEMENT_COLUMNS + list(self.models))

    def predictions_frame(self) -> pd.DataFrame:
        """Every top-k row of every model on every image (long form)."""
        rows = [
            {"file": image.file, "model": name, "rank": p.rank, "label": p.label, "probability": p.probability}
            for image in self.images
            for name in self.models
            for p in image.results[name].predictions
        ]
        return pd.DataFrame(rows, columns=PREDICTION_COLUMNS)

    def as_json(self) -> dict:
        """Models (latency, accuracy, params as a count, GFLOPS, file size) and images in input order."""
        entries = self.entries or [*self.images, *self.failures]
        return {
            "models": [
                {
                    "name": s.name,
                    "runtime": s.runtime,
                    "latency_ms": None if s.latency_ms is None else round(s.latency_ms, 3),
                    "agreement": s.agreement,
                    "acc1": s.acc1,
                    "params": round(s.params_m * 1e6),
                    "gflops": s.gflops,
                    "size_mb": s.size_mb,
                }
                for s in (self.stats[name] for name in self.models)
            ],
            "images": [entry.as_json() if isinstance(entry, Failure) else self._image_json(entry) for entry in entries],
        }

    def _image_json(self, image: ImageComparison) -> dict:
        return {
            "file": image.file,
            "results": {
                name: [{"label": p.label, "probability": p.probability} for p in image.results[name].predictions]
                for name in self.models
            },
            "top1_agree": image.top1_agree,
            "consensus": image.consensus,
        }


# --- running the comparison ---------------------------------------------------------------------


def _check_models(models: Sequence[ModelHandle]) -> None:
    if not models:
        raise ZooScopeError("Pick at least one model to compare.")
    names = [model.name for model in models]
    if len(set(names)) != len(names):
        twice = sorted({name for name in names if names.count(name) > 1})
        raise ZooScopeError(f"Each model can be compared only once; listed more than once: {', '.join(twice)}.")
    first = models[0]
    for model in models[1:]:
        if list(model.categories) != list(first.categories):
            raise ZooScopeError(
                f"{model.name} and {first.name} predict different sets of classes "
                f"({len(model.categories)} and {len(first.categories)}), so their answers cannot be compared."
            )


def _stats(model: ModelHandle, latency_ms: float | None) -> ModelStats:
    spec = model.spec
    return ModelStats(
        name=model.name,
        family=spec.family,
        latency_ms=latency_ms,
        memory_mb=model.memory_mb,
        acc1=spec.acc1,
        acc5=spec.acc5,
        params_m=spec.num_params / 1e6,
        gflops=spec.gflops,
        size_mb=model.file_size_mb,
        input_size=spec.input_size,
        runtime=model.runtime,
        agreement=model.agreement,
    )


def _image_comparison(
    name: str,
    results: dict[str, Classification],
    probs: list[torch.Tensor],
    categories: Sequence[str],
    image: Image.Image,
    thumbnails: bool,
) -> ImageComparison:
    mean = _mean_probability(probs)
    index = _argmax(mean)
    shared = shared_top_k([[p.label for p in r.predictions] for r in results.values()])
    # Highest mean probability first; a stable sort keeps ties in class order.
    by_mean = [categories[i] for i in torch.sort(mean, descending=True, stable=True).indices.tolist()]
    return ImageComparison(
        file=name,
        results=results,
        top1_agree=top1_agree([r.top1.label for r in results.values()]),
        shared_top_k=tuple(dict.fromkeys(label for label in by_mean if label in shared)),
        consensus=categories[index],
        consensus_probability=float(mean[index]),
        thumbnail=thumbnail(image) if thumbnails else None,
    )


class _Inline:
    """An executor that runs each task at once, in the calling thread."""

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def submit(self, fn: Callable[..., T], /, *args: object) -> Future[T]:
        future: Future[T] = Future()
        future.set_result(fn(*args))
        return future


def _preprocess_executor(models: Sequence[ModelHandle]) -> ThreadPoolExecutor | _Inline:
    if _overlap_preprocessing(models):
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="zooscope-preprocess")
    return _Inline()


def _overlap_preprocessing(models: Sequence[ModelHandle]) -> bool:
    """Whether to prepare the next model's batch in a helper thread while this model runs.

    Only when that takes nothing from the forward: the forward runs on a GPU, or torch's CPU
    threads leave a core free. With every core in torch's use, its OpenMP threads spin-wait for
    the core the helper takes, and the forward loses far more than the overlap saves (3 lite
    models, 2 cores, 2 torch threads: 1.74x the bare forwards' time instead of 1.16x serially).
    """
    if any(model.device.type == "cuda" for model in models):
        return True
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return torch.get_num_threads() < cores


def _timed_preprocess(model: ModelHandle, images: Sequence[Image.Image]) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    batch = preprocess(model, images)
    return batch, (time.perf_counter() - start) * 1000


def compare_files(
    models: Sequence[ModelHandle],
    files: Sequence[tuple[str, bytes]],
    *,
    k: int = DEFAULT_TOP_K,
    latency_runs: int = 5,
    thumbnails: bool = False,
    progress: Progress | None = None,
) -> Comparison:
    """Run every model over the same (name, bytes) files and compare their answers.

    Each file is decoded once; one that cannot be becomes a Failure and the rest are still
    compared. Images go through the models in batches of DEFAULT_BATCH_SIZE (decoded images live
    only for their batch, so memory stays flat however many files come in), one model at a time.
    Where a core is free for it (see _overlap_preprocessing), the next model's preprocessing (its
    own resize, crop, normalise, on the CPU) runs in a helper thread during this model's forward.

    A model's latency is the median forward of the first decoded image alone (batch 1) over
    `latency_runs` runs after a warm-up; with `latency_runs=0`, its batched forwards' time divided
    by the number of images instead. (Each Classification's own latency_ms is, as in
    core.classify.predict, its share of preprocess + forward + top-k.)
    """
    _check_models(models)
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    categories = models[0].categories
    entries: dict[int, ImageComparison | Failure] = {}
    forward_ms = dict.fromkeys((m.name for m in models), 0.0)
    latency: dict[str, float] = {}
    decoded_total = 0
    chunks = range(0, len(files), DEFAULT_BATCH_SIZE)
    steps, done = max(len(chunks), 1) * len(models), 0

    side = decode_side(model.preprocess for model in models)  # decoded once, big enough for every model
    with _preprocess_executor(models) as helper:
        for chunk_start in chunks or [0]:
            decoded: list[tuple[int, str, Image.Image]] = []
            for index, (name, data) in enumerate(files[chunk_start : chunk_start + DEFAULT_BATCH_SIZE], chunk_start):
                try:
                    decoded.append((index, name, decode_image(data, min_side=side)))
                except ImageError as error:
                    entries[index] = Failure(file=name, error=str(error))
            images = [image for _, _, image in decoded]
            results: list[dict[str, Classification]] = [{} for _ in decoded]
            probs: list[list[torch.Tensor]] = [[] for _ in decoded]
            upcoming = helper.submit(_timed_preprocess, models[0], images) if images else None
            for position, model in enumerate(models):
                if upcoming is not None:
                    batch, preprocess_ms = upcoming.result()
                    if position + 1 < len(models):
                        upcoming = helper.submit(_timed_preprocess, models[position + 1], images)
                    start = time.perf_counter()
                    model_probs = probabilities(model, batch)
                    forward_ms[model.name] += (time.perf_counter() - start) * 1000
                    ranked = top_k(model_probs, categories, k)
                    share_ms = (preprocess_ms + (time.perf_counter() - start) * 1000) / len(images)
                    for i, (_, name, _) in enumerate(decoded):
                        results[i][model.name] = Classification(
                            file=name, model=model.name, predictions=ranked[i], latency_ms=share_ms
                        )
                        probs[i].append(model_probs[i])
                    if latency_runs > 0 and model.name not in latency:
                        latency[model.name] = measure_latency_ms(model, batch[:1], runs=latency_runs)
                done += 1
                if progress:
                    last = min(chunk_start + DEFAULT_BATCH_SIZE, len(files))
                    progress(done, steps, f"{model.name}: {last} of {len(files)} images")
            for i, (index, name, image) in enumerate(decoded):
                entries[index] = _image_comparison(name, results[i], probs[i], categories, image, thumbnails)
            decoded_total += len(decoded)

    if latency_runs <= 0 and decoded_total:
        latency = {name: total / decoded_total for name, total in forward_ms.items()}
    ordered = [entries[index] for index in range(len(files))]
    return Comparison(
        models=[model.name for model in models],
        images=[e for e in ordered if isinstance(e, ImageComparison)],
        failures=[e for e in ordered if isinstance(e, Failure)],
        stats={model.name: _stats(model, latency.get(model.name)) for model in models},
        entries=ordered,
    )
