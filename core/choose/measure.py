"""One catalogue model measured on this machine, in each runtime asked for: what a row of the table holds.

The model is built with random weights: nothing is downloaded, and speed does not depend on the
weights' values (a dense kernel does the same arithmetic on any numbers). Timings are medians of
forwards of a fixed tensor, after a warm-up forward, and stop early for slow models (at least
MIN_RUNS each), so the biggest models cost seconds, not minutes.

Memory is what the model adds to the process: its weights in the runtime's file, plus the peak
activations of a forward at batch 1, from the family's measured per-pixel factor
(core.models.footprints). Measuring the peak growth of the process itself would count whatever
the other visitors do meanwhile.
"""

from __future__ import annotations

import datetime
import math
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from core import runtime
from core.choose.machine import Machine
from core.choose.predict import int8_size_mb
from core.jobs.limits import memory_limit_mb, process_memory_mb
from core.models import footprints
from core.models.catalog import ModelSpec

MIN_RUNS = 3
STEADY_SPREAD = 1.5  # a median this far above the fastest run means other work shared the cores
STEADY_ATTEMPTS = 3
THROUGHPUT_BATCH = 8
MIB = 2**20
CALIBRATION_COUNT = 8  # int8 activation ranges: enough for speed and size, which is all a row records


@dataclass(frozen=True)
class Settings:
    runs: int = 10  # batch-1 forwards timed, at most
    seconds: float = 6.0  # a budget for each timing loop, reached first by slow models
    throughput_runs: int = 3
    # In the app: the memory the line admitted the job with; a model that needs more is skipped.
    memory_cap_mb: float | None = None


DEFAULT_SETTINGS = Settings()


def _elapsed_ms(forward: Callable[[], object]) -> float:
    start = time.perf_counter()
    forward()
    return (time.perf_counter() - start) * 1000


def forward_times_ms(
    forward: Callable[[], object], *, runs: int, seconds: float, minimum: int = MIN_RUNS
) -> list[float]:
    """Wall times of `forward()` in ms, after one warm-up call: `runs` calls, or fewer once `seconds`
    have passed (never fewer than `minimum`)."""
    forward()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < max(runs, 1) and (len(times) < minimum or time.perf_counter() < deadline):
        times.append(_elapsed_ms(forward))
    return times


def median_forward_ms(forward: Callable[[], object], *, runs: int, seconds: float, minimum: int = MIN_RUNS) -> float:
    """The median of `forward_times_ms`."""
    return statistics.median(forward_times_ms(forward, runs=runs, seconds=seconds, minimum=minimum))


def steady_median_ms(
    forward: Callable[[], object], *, runs: int, seconds: float, attempts: int = STEADY_ATTEMPTS
) -> float:
    """The median of `forward_times_ms`, timed again (up to `attempts` times, the lowest median kept) while
    it is more than STEADY_SPREAD times the fastest run: other work took the cores for a while. That helps
    against bursts only. Measured here (efficientnet_b0, 2 threads on 2 cores): 22 ms median alone; with a
    second such process at once, medians of 58 and 135 ms and fastest runs of 41 and 55 ms. So a table is
    measured on an otherwise idle machine: the page measures in the line, where trainings pause for it."""
    best = math.inf
    for _ in range(max(attempts, 1)):
        times = forward_times_ms(forward, runs=runs, seconds=seconds)
        median = statistics.median(times)
        best = min(best, median)
        if median <= STEADY_SPREAD * min(times):
            break
    return best


def estimated_seconds(spec: ModelSpec, runtimes: Sequence[str], settings: Settings = DEFAULT_SETTINGS) -> float:
    """About how long measuring `spec` takes here, from its GFLOPS (about 10 GFLOPS a second on 2 slow
    cores, eager): the timing loops, capped by their budgets, and an export for the ONNX runtimes."""
    forward_s = max(spec.gflops / 10, 0.002)
    loops = min(settings.runs * forward_s, settings.seconds) + min(3 * THROUGHPUT_BATCH * forward_s, settings.seconds)
    export_s = 10.0 + 2 * forward_s if any(name in ("onnx", "int8") for name in runtimes) else 0.0
    return len(runtimes) * loops + export_s + 1.0


def base_row(spec: ModelSpec, runtime_name: str, machine: Machine) -> dict[str, Any]:
    """What the catalogue says of `spec`, and where it is being measured."""
    return {
        "model": spec.name,
        "family": spec.family,
        "runtime": runtime_name,
        "params_m": spec.num_params / 1e6,
        "gflops": spec.gflops,
        "accuracy": spec.acc1,
        "input_size": spec.input_size,
        "fp32_size_mb": spec.file_size_mb,
        "int8_size_mb": int8_size_mb(spec.num_params),  # estimated until an int8 file is measured
        **machine.columns(),
        "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def memory_need_mb(spec: ModelSpec, runtimes: Sequence[str]) -> float:
    """What measuring `spec` in `runtimes` will hold at its peak (weights, batch-8 activations, an export)."""
    if any(name in ("onnx", "int8") for name in runtimes):
        engine = "int8" if "int8" in runtimes else "onnx"
        return footprints.export_mb(
            params=spec.num_params, input_size=spec.input_size, family=spec.family, engine=engine
        ) + footprints.weights_mb(spec.num_params)
    return footprints.weights_mb(spec.num_params) + footprints.activations_mb(
        spec.input_size, spec.family, batch=THROUGHPUT_BATCH
    )


def too_big(spec: ModelSpec, runtimes: Sequence[str], cap_mb: float | None = None) -> str | None:
    """Why `spec` cannot be measured in the memory this process has left (or in `cap_mb`), or None where it fits."""
    need = memory_need_mb(spec, runtimes)
    left = memory_limit_mb() - process_memory_mb()
    if need > left:
        return f"needs about {need:,.0f} MB to measure, and {max(left, 0):,.0f} MB of this process's limit is left"
    if cap_mb is not None and need > cap_mb:
        return f"needs about {need:,.0f} MB to measure, more than this server measures with ({cap_mb:,.0f} MB)"
    return None


def build_random(spec: ModelSpec) -> torch.nn.Module:
    """`spec`'s architecture with its own random initialisation, in eval mode, frozen."""
    # No torch.manual_seed: the generator is the process's, shared with every visitor's training, and
    # speed does not depend on the values.
    with runtime.TORCH_GLOBAL_STATE:  # builders run nn.init, which edits torch's tracing state beside an export
        model = spec.build()
    return model.eval().requires_grad_(False)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200]}" if text else type(error).__name__


def _timed(forward: Callable[[torch.Tensor], object], size: int, settings: Settings) -> dict[str, float]:
    one = torch.rand(1, 3, size, size)
    eight = torch.rand(THROUGHPUT_BATCH, 3, size, size)
    latency = steady_median_ms(lambda: forward(one), runs=settings.runs, seconds=settings.seconds)
    # A model over a second a photo gets one timed batch of 8: a few more would add minutes, not precision.
    runs = 1 if latency > 1000 else settings.throughput_runs
    batch_ms = median_forward_ms(lambda: forward(eight), runs=runs, seconds=settings.seconds, minimum=1)
    return {"latency_ms": latency, "throughput_ips": THROUGHPUT_BATCH * 1000 / batch_ms}


def _torch_row(model: torch.nn.Module, spec: ModelSpec, row: dict, settings: Settings) -> dict:
    with torch.inference_mode():
        timings = _timed(model, spec.input_size, settings)
    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers())) / MIB
    activations = footprints.activations_mb(spec.input_size, spec.family)
    return row | timings | {"size_mb": spec.file_size_mb, "memory_mb": weights + activations}


def _onnx_row(path: Path, spec: ModelSpec, row: dict, settings: Settings, threads: int) -> dict:
    from core.engines.sessions import SessionForward, open_session

    forward = SessionForward(open_session(path, threads=threads))
    size = sum(part.stat().st_size for part in path.parent.glob(path.name + "*")) / MIB  # the file and its .data
    activations = footprints.activations_mb(spec.input_size, spec.family)
    return row | _timed(forward, spec.input_size, settings) | {"size_mb": size, "memory_mb": size + activations}


def _calibration(spec: ModelSpec) -> list:
    from core.datasets.check_images import calibration_images
    from core.preprocessing import model_batch

    images = calibration_images()[:CALIBRATION_COUNT]
    return [model_batch([image], spec.transforms()).numpy() for image in images]


def measure_model(
    spec: ModelSpec, runtimes: Sequence[str], machine: Machine, settings: Settings = DEFAULT_SETTINGS
) -> list[dict[str, Any]]:
    """One row for each of `runtimes` ("torch", "onnx", "int8"): measured, or skipped or failed with
    the reason. The model is built once and exported once for both ONNX Runtime rows."""
    rows = {name: base_row(spec, name, machine) for name in runtimes}
    if reason := too_big(spec, runtimes, settings.memory_cap_mb):
        return [row | {"status": "skipped", "reason": reason, "measured": False} for row in rows.values()]
    out: dict[str, dict] = {}
    try:
        model = build_random(spec)
    except Exception as error:  # a builder that cannot run here: the row says why, the run goes on
        return [row | {"status": "failed", "reason": _first_line(error), "measured": False} for row in rows.values()]
    if "torch" in rows:
        out["torch"] = _attempt(lambda: _torch_row(model, spec, rows["torch"], settings), rows["torch"])
    if "onnx" in rows or "int8" in rows:
        out |= _onnx_rows(model, spec, rows, settings, machine.threads)
    return [out[name] for name in runtimes]


def _attempt(make: Callable[[], dict], row: dict) -> dict:
    try:
        return make() | {"status": "measured", "reason": "", "measured": True}
    except Exception as error:  # one runtime failing (an op it lacks) leaves the others measured
        return row | {"status": "failed", "reason": _first_line(error), "measured": False}


def _onnx_rows(model: torch.nn.Module, spec: ModelSpec, rows: dict, settings: Settings, threads: int) -> dict:
    from core.engines.onnx_export import INPUT, export_module
    from core.engines.quantize import quantize_int8

    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="zooscope-measure-") as folder:
        fp32 = Path(folder) / f"{spec.name}.onnx"
        try:
            export_module(model, spec.input_size, fp32)
        except Exception as error:  # ExportFailed and friends: neither ONNX row can be measured
            reason = f"no ONNX export: {_first_line(error)}"
            return {
                name: rows[name] | {"status": "failed", "reason": reason, "measured": False}
                for name in ("onnx", "int8")
                if name in rows
            }
        if "onnx" in rows:
            out["onnx"] = _attempt(lambda: _onnx_row(fp32, spec, rows["onnx"], settings, threads), rows["onnx"])
        if "int8" in rows:
            int8 = Path(folder) / f"{spec.name}.int8.onnx"

            def make_int8() -> dict:
                quantize_int8(fp32, int8, _calibration(spec), input_name=INPUT)
                row = _onnx_row(int8, spec, rows["int8"], settings, threads)
                return row | {"int8_size_mb": row["size_mb"]}

            out["int8"] = _attempt(make_int8, rows["int8"])
    return out
