"""One variant of a model and what it costs and keeps, each measured here the same way.

Every variant is an ONNX file run by ONNX Runtime, so the table compares models, not engines: the
unchanged model is fp32 in ONNX Runtime too. Its costs: parameters and GFLOPS (multiply-adds, as
the catalogue counts them), the file's size and its size compressed (what a download costs), and
batch-1 latency on one thread and on all of them. Its fidelity: accuracy on the person's validation
images where labels are known, else top-1 agreement with the fp32 original on held-out photos.

Latencies are measured last, every variant's blocks of runs taking turns (`time_all`), so a busy
moment on a shared machine slows them all alike and the ratios between them hold.
"""

from __future__ import annotations

import copy
import functools
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from core.engines.sessions import SessionForward, open_session
from core.preprocessing import Transform, model_batch
from core.shrink.sparsity import compressed_mb

BATCH = 16  # images per forward when judging


@dataclass(frozen=True)
class Variant:
    """One way to ship the model, measured."""

    name: str  # "fp32", "int8", "pruned 50%", "pruned 50% + int8", "50% zeros"
    kind: str  # "original", "int8", "pruned", "pruned+int8", "zeros"
    ratio: float | None  # channels pruned, or weights zeroed
    params: int
    gflops: float
    onnx: Path  # its ONNX file in the work folder (weights beside it for fp32 exports)
    module: nn.Module | None  # the fp32 PyTorch module it was exported from (an ExecuTorch program's source)
    size_mb: float
    compressed_mb: float
    fidelity: float
    top1: tuple[int, ...]  # its answers on the judging images (what a shipped file must reproduce)
    notes: tuple[str, ...] = ()  # how it was made: recovery, nodes kept in float, why no faster
    latency_ms: float = math.nan  # batch 1, all threads
    latency_one_thread_ms: float = math.nan

    @property
    def is_int8(self) -> bool:
        return self.kind in ("int8", "pruned+int8")


def onnx_size_mb(path: Path) -> float:
    """The export's bytes: the graph and any external weights file beside it."""
    return sum(file.stat().st_size for file in _export_files(path)) / 2**20


def _export_files(path: Path) -> list[Path]:
    weights = path.with_name(path.name + ".data")  # torch.onnx's external data file
    return [path, weights] if weights.exists() else [path]


def compressed_size_mb(path: Path) -> float:
    """The export deflated (core.shrink.sparsity.compressed_mb, file by file): what a download costs."""
    return sum(compressed_mb(file) for file in _export_files(path))


def count_params_and_gflops(module: nn.Module, input_size: int) -> tuple[int, float]:
    """Parameters and multiply-adds (GFLOPS as the catalogue counts them) of a copy of `module`: the counter
    hooks every layer, and the module may be shared with other sessions."""
    import torch_pruning as tp  # the counter that prune.py's before/after figures come from

    private = copy.deepcopy(module).eval()
    with torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(private, torch.zeros(1, 3, input_size, input_size))
    return int(params), float(macs) / 1e9


def top1_of(
    forward: Callable[[torch.Tensor], torch.Tensor], images: Sequence[Image.Image], preprocess: Transform
) -> np.ndarray:
    """Each image's top-1 class under `forward`, in batches of BATCH."""
    answers = []
    for start in range(0, len(images), BATCH):
        batch = model_batch(images[start : start + BATCH], preprocess)
        with torch.inference_mode():
            answers.append(forward(batch).argmax(dim=1).numpy())
    return np.concatenate(answers) if answers else np.zeros(0, dtype=np.int64)


def fidelity(top1: np.ndarray, expected: Sequence[int]) -> float:
    """The share of images whose top-1 is the expected one (the label, or the original's answer)."""
    expected_array = np.asarray(expected)
    if len(top1) != len(expected_array) or len(top1) == 0:
        raise ValueError(f"{len(top1)} answers against {len(expected_array)} expected")
    return float((top1 == expected_array).mean())


def measure(
    name: str,
    kind: str,
    *,
    onnx: Path,
    module: nn.Module | None,
    params: int,
    gflops: float,
    ratio: float | None,
    holdout: Sequence[Image.Image],
    preprocess: Transform,
    expected: Sequence[int],
    notes: Sequence[str] = (),
) -> Variant:
    """A variant's sizes and fidelity (its latency comes later, with every variant's: `time_all`)."""
    top1 = top1_of(SessionForward(open_session(onnx)), holdout, preprocess)
    return Variant(
        name=name,
        kind=kind,
        ratio=ratio,
        params=params,
        gflops=gflops,
        onnx=onnx,
        module=module,
        size_mb=onnx_size_mb(onnx),
        compressed_mb=compressed_size_mb(onnx),
        fidelity=fidelity(top1, expected),
        top1=tuple(int(answer) for answer in top1),
        notes=tuple(notes),
    )


def time_all(
    variants: Sequence[Variant], example: torch.Tensor, *, all_threads: int, rounds: int = 5, block: int = 9
) -> list[Variant]:
    """Each variant with its batch-1 latency on one thread and on `all_threads`: the median of `rounds`
    blocks of `block` runs each, the variants' blocks taking turns. In blocks, not run by run: ONNX
    Runtime's worker threads spin for a while after a run, and would take the cores from the next
    session's run (measured: two threads alternated run by run read slower than one)."""
    array = example.numpy()
    timed: dict[int, dict[str, float]] = {}
    for threads in sorted({1, all_threads}):
        sessions = {variant.name: open_session(variant.onnx, threads=threads) for variant in variants}
        runs: dict[str, Callable[[], object]] = {
            name: functools.partial(session.run, None, {session.get_inputs()[0].name: array})
            for name, session in sessions.items()
        }
        times: dict[str, list[float]] = {name: [] for name in runs}
        for index in range(rounds):
            order = list(runs.items()) if index % 2 == 0 else list(runs.items())[::-1]
            for name, run in order:
                run()  # the block's warm-up: the previous session's threads go quiet
                for _ in range(block):
                    start = time.perf_counter()
                    run()
                    times[name].append((time.perf_counter() - start) * 1000)
        timed[threads] = {name: statistics.median(values) for name, values in times.items()}
        del sessions, runs
    return [
        replace(variant, latency_one_thread_ms=timed[1][variant.name], latency_ms=timed[all_threads][variant.name])
        for variant in variants
    ]
