"""Facts about the process the app runs in: which device, how many CPU threads, which precision, memory.

Every decision about how the hardware is used lives here, made once per process:

- `pick_device()`: the first GPU if there is one, else the CPU (and it sets torch's CPU threads);
- `configure_threads()`: torch's intra-op threads from the cgroup CPU quota, the CPUs this process
  may run on, or `ZOOSCOPE_TORCH_THREADS`;
- `use_channels_last(traits, device)`: channels-last memory layout for CNNs on CUDA only;
- `train_channels_last(traits, device)`: the same for the modules fine-tuning trains (CPU too);
- `model_precision(traits, device)`: "fp32" or "bf16" (autocast) from `ZOOSCOPE_PRECISION` and,
  for `auto`, a measured agreement the caller supplies (core.models.precision_check);
- `resolve_runtime(requested, device)`: which engine runs a model, PyTorch or ONNX Runtime (fp32 or
  int8), from `ZOOSCOPE_RUNTIME` or `--runtime`; `int8_verdict(...)`: whether a measured int8
  variant is the fast choice; `onnx_threads()`: ONNX Runtime's threads, the same count as torch's;
- `memory_budget_mb()`: what the model pool may hold (`ZOOSCOPE_MEMORY_BUDGET_MB`), and
  `memory_estimate_mb(...)`: what a model will hold, guessed before it loads.

Decisions only: this module measures nothing itself and imports nothing else of `core` but the
family table.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import psutil
import torch

from core.models.families import FamilyTraits

_log = logging.getLogger(__name__)

# --- CPU threads ----------------------------------------------------------------------------------

THREADS_ENV = "ZOOSCOPE_TORCH_THREADS"
CGROUP_V2_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def parse_cpu_max(text: str) -> float | None:
    """CPUs granted by a cgroup v2 `cpu.max` ("200000 100000" -> 2.0); None for "max" or junk."""
    fields = text.split()
    if not fields or fields[0] == "max":
        return None
    try:
        quota = int(fields[0])
        period = int(fields[1]) if len(fields) > 1 else 100_000  # the kernel's default period
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def cgroup_cpu_quota(
    cpu_max: Path = CGROUP_V2_CPU_MAX, v1_quota: Path = CGROUP_V1_QUOTA, v1_period: Path = CGROUP_V1_PERIOD
) -> float | None:
    """CPUs this container may use per wall-clock second (cgroup v2, else v1), or None if unlimited."""
    try:
        return parse_cpu_max(cpu_max.read_text())
    except OSError:
        pass
    try:
        quota, period = int(v1_quota.read_text()), int(v1_period.read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None  # v1 writes -1 for "no limit"


def usable_cpus() -> int:
    """CPUs this process may be scheduled on (its affinity mask, else the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return os.cpu_count() or 1


def thread_count(
    env: Mapping[str, str] | None = None,
    *,
    quota: Callable[[], float | None] = cgroup_cpu_quota,
    cpus: Callable[[], int] = usable_cpus,
) -> int:
    """Intra-op threads for torch: `ZOOSCOPE_TORCH_THREADS` if it is a positive integer, else
    `OMP_NUM_THREADS` if set, else the usable CPUs capped by the cgroup quota (rounded up: a
    1.5-CPU quota still runs 2 threads well).

    A container often sees every core of its host but may use only one or two (Streamlit Community
    Cloud): torch's own default, one thread per visible core, would then make its threads wait on
    each other for most of each forward pass.
    """
    env = os.environ if env is None else env
    raw = env.get(THREADS_ENV, "").strip()
    if raw:
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value > 0:
            return value
        _log.warning("%s=%r is not a positive integer; choosing from the CPU count", THREADS_ENV, raw)
    omp = env.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0:  # the standard knob, which torch itself reads: respect it
        return int(omp)
    return available_cpus(quota=quota, cpus=cpus)


def available_cpus(
    *, quota: Callable[[], float | None] = cgroup_cpu_quota, cpus: Callable[[], int] = usable_cpus
) -> int:
    """CPUs this process can really use: its affinity mask, capped by the cgroup quota (rounded up)."""
    count = cpus()
    limit = quota()
    if limit is not None:
        count = min(count, max(1, math.ceil(limit)))
    return max(count, 1)


_threads_lock = threading.Lock()
_threads_configured: int | None = None


def configure_threads(*, force: bool = False) -> int:
    """Set torch's CPU threads for this machine, once per process (again with `force`); returns the count.

    Inter-op threads (torch's pool for running independent operators side by side, which eager
    inference does not use) are set to the same bound. torch only allows that before its first
    parallel work, so a late call keeps torch's choice and logs why.
    """
    global _threads_configured
    with _threads_lock, TORCH_GLOBAL_STATE:
        if _threads_configured is not None and not force:
            return _threads_configured
        count = thread_count()
        torch.set_num_threads(count)
        try:
            torch.set_num_interop_threads(count)
        except RuntimeError as error:  # "cannot set number of interop threads after parallel work has started"
            _log.debug("inter-op threads left at %d: %s", torch.get_num_interop_threads(), error)
        _threads_configured = count
        return count


# --- torch's process-global state ----------------------------------------------------------------

# Every visitor is a thread in this one process, but some of torch's state is the process's, not the
# thread's: torch.export (ONNX export) sets torch.compiler.is_exporting() for every thread and, while
# it is set, every dynamo-disabled function in any thread edits torch.fx.traceback's one global
# `current_meta` (measured: building timm models on the meta device beside an export raised
# KeyError('custom') 29 times in two minutes). Whatever changes or traces that state holds this lock:
# building on the meta device, ONNX export, meta-device forward passes, torch's thread counts.
TORCH_GLOBAL_STATE = threading.RLock()


# --- device ---------------------------------------------------------------------------------------


@functools.cache
def pick_device() -> torch.device:
    """Chosen once per process: the first GPU if there is one, else the CPU. Sets CPU threads too."""
    configure_threads()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)}"
    return f"CPU ({psutil.cpu_count(logical=True)} threads, torch uses {torch.get_num_threads()})"


def process_memory_mb() -> float:
    """Resident memory of this process, in MiB."""
    return psutil.Process().memory_info().rss / 2**20


# --- memory layout --------------------------------------------------------------------------------


def use_channels_last(traits: FamilyTraits, device: torch.device | str) -> bool:
    """Whether a model with these family traits, on `device`, holds its weights (and takes inputs)
    channels-last: CNNs on CUDA only (cuDNN's fastest layout; efficientnet_b0 1.56x on an H100)."""
    return torch.device(device).type == "cuda" and traits.channels_last


def train_channels_last(traits: FamilyTraits, device: torch.device | str) -> bool:
    """Whether the modules a person trains (and their inputs) go channels-last: CNNs on any device.

    Unlike inference (about 1x on the CPU for most families), training gains on the CPU too:
    oneDNN's convolution backward ran efficientnet_lite0's last half about 2.5x faster
    channels-last here (forward and backward, batch 32).
    """
    return traits.channels_last


# --- precision ------------------------------------------------------------------------------------

PRECISION_ENV = "ZOOSCOPE_PRECISION"
PRECISIONS = ("fp32", "bf16", "auto")
AGREEMENT_GOAL = 0.99  # bf16's top-1 must match fp32's on at least this share of the check's images


def requested_precision(env: Mapping[str, str] | None = None) -> str:
    """`ZOOSCOPE_PRECISION` as one of fp32, bf16, auto (default auto; anything else warns, then auto)."""
    env = os.environ if env is None else env
    raw = env.get(PRECISION_ENV, "").strip().lower()
    if not raw:
        return "auto"
    aliases = {"float32": "fp32", "bfloat16": "bf16", "32": "fp32"}
    value = aliases.get(raw, raw)
    if value not in PRECISIONS:
        _log.warning("%s=%r is not one of %s; using auto", PRECISION_ENV, raw, ", ".join(PRECISIONS))
        return "auto"
    return value


def resolve_precision(
    requested: str,
    device: torch.device | str,
    *,
    bf16_slow: bool = False,
    agreement: Callable[[], float],
    bf16_supported: Callable[[], bool] | None = None,
) -> str:
    """The one precision decision: "fp32" or "bf16" for a model on `device`.

    - fp32: always fp32.
    - bf16: bf16 autocast wherever the device supports it (asked for explicitly, so also on the CPU).
    - auto: fp32 on the CPU; on CUDA, bf16 only if the device supports it, the model's family is
      not one that bf16 slows down (`bf16_slow`, from the family table), and `agreement()` (top-1
      agreement of bf16 with fp32 on real photos, computed lazily: only this branch calls it) is
      at least AGREEMENT_GOAL.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {requested!r}")
    device = torch.device(device)
    if requested == "fp32":
        return "fp32"
    supported = bf16_supported or (lambda: _bf16_supported(device))
    if requested == "bf16":
        if supported():
            return "bf16"
        _log.warning("bf16 was asked for but %s does not support it; using fp32", device)
        return "fp32"
    if device.type != "cuda" or bf16_slow or not supported():
        return "fp32"
    return "bf16" if agreement() >= AGREEMENT_GOAL else "fp32"


def _bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu"  # CPU autocast runs bf16 everywhere (fast only with AVX512-BF16/AMX)


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """The context a forward runs in for `precision`: bf16 autocast, or nothing at all for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    if precision != "fp32":
        raise ValueError(f"a model runs in fp32 or bf16, not {precision!r}")
    return contextlib.nullcontext()


def model_precision(
    traits: FamilyTraits,
    device: torch.device | str,
    requested: str | None = None,
    *,
    agreement: Callable[[], float],
) -> str:
    """The precision a model with these family traits runs in on `device`: `requested`, else
    ZOOSCOPE_PRECISION; `agreement()` is asked only where auto must measure (see resolve_precision)."""
    return resolve_precision(
        requested_precision() if requested is None else requested,
        device,
        bf16_slow=traits.bf16_slow,
        agreement=agreement,
    )


# --- runtime: which engine runs a model -----------------------------------------------------------

RUNTIME_ENV = "ZOOSCOPE_RUNTIME"
RUNTIMES = ("auto", "torch", "onnx", "int8")
ENGINES = ("torch", "onnx", "int8")  # what a model can run in once decided
ENGINE_LABELS = {"torch": "PyTorch", "onnx": "ONNX Runtime", "int8": "ONNX Runtime int8"}
INT8_AGREEMENT_GOAL = 0.95  # int8's top-1 must match fp32's on at least this share of the check images


def parse_runtime(value: str) -> str:
    """`value` as one of RUNTIMES (case and spaces ignored); ValueError naming the choices otherwise."""
    runtime = value.strip().lower()
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {value!r}; choose one of {', '.join(RUNTIMES)}")
    return runtime


def requested_runtime(env: Mapping[str, str] | None = None) -> str:
    """`ZOOSCOPE_RUNTIME` as one of RUNTIMES (default auto; anything else warns, then auto)."""
    env = os.environ if env is None else env
    raw = env.get(RUNTIME_ENV, "").strip()
    if not raw:
        return "auto"
    try:
        return parse_runtime(raw)
    except ValueError as error:
        _log.warning("%s: %s; using auto", RUNTIME_ENV, error)
        return "auto"


def resolve_runtime(requested: str, device: torch.device | str) -> str:
    """The one runtime decision: "torch", "onnx" or "int8" for a model on `device`.

    - On CUDA: PyTorch, whatever was asked (ONNX Runtime here is its CPU build; the GPU path stays as it is).
    - On the CPU: torch -> PyTorch; auto and onnx -> ONNX Runtime fp32; int8 -> ONNX Runtime int8.
      auto never picks int8: int8 changes answers, so it runs only when asked for.

    This is the intent. The engine that exports the model runs it only once its graph is verified
    against PyTorch (core.engines.onnx_engine), and keeps PyTorch, with a note, where it is not.
    """
    if requested not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, not {requested!r}")
    if torch.device(device).type != "cpu" or requested == "torch":
        return "torch"
    return "int8" if requested == "int8" else "onnx"


def onnx_threads() -> int:
    """ONNX Runtime's intra-op threads: the count torch runs with, which pick_device() sets once per
    process (configure_threads: the cgroup-aware CPU count, or ZOOSCOPE_TORCH_THREADS); so the two
    engines never ask for more cores than there are, and a caller that sets torch's threads (a
    benchmark, a test) sets ONNX Runtime's too. Read when a session is made."""
    return torch.get_num_threads()


def int8_verdict(agreement: float, int8_ms: float, fp32_ms: float) -> tuple[bool, str]:
    """Whether a measured int8 variant is the fast choice, and why in a few words.

    Only where it is faster than fp32 and its top-1 agrees with fp32's on at least INT8_AGREEMENT_GOAL
    of the check images; otherwise it is still there to try, marked as slower or as less faithful.
    """
    faithful = agreement >= INT8_AGREEMENT_GOAL
    faster = int8_ms < fp32_ms
    if faithful and faster:
        return True, f"{fp32_ms / int8_ms:.1f}x faster than fp32, same top-1 on {agreement:.0%} of the check images"
    reasons = []
    if not faster:
        reasons.append(f"slower than fp32 here ({int8_ms:.1f} vs {fp32_ms:.1f} ms)")
    if not faithful:
        goal = f"{INT8_AGREEMENT_GOAL:.0%}"
        reasons.append(f"same top-1 as fp32 on only {agreement:.1%} of the check images (goal {goal})")
    return False, "; ".join(reasons)


# --- memory: what the model pool may hold ---------------------------------------------------------

# In MiB of parameters + buffers. Streamlit Community Cloud gives an app about 2.7 GB in all; torch,
# torchvision and streamlit themselves take several hundred MB, and a forward pass needs its activations
# on top: 1500 MB of models leaves room for those.
DEFAULT_MEMORY_BUDGET_MB = 1500.0
MEMORY_BUDGET_ENV = "ZOOSCOPE_MEMORY_BUDGET_MB"


def memory_budget_mb(env: Mapping[str, str] | None = None) -> float:
    """ZOOSCOPE_MEMORY_BUDGET_MB as a positive number of MiB, else the default (inf means no limit)."""
    env = os.environ if env is None else env
    raw = env.get(MEMORY_BUDGET_ENV, "").strip()
    if not raw:
        return DEFAULT_MEMORY_BUDGET_MB
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0:  # zero, negatives and nan
        _log.warning("%s=%r is not a positive number of MB; using %g", MEMORY_BUDGET_ENV, raw, DEFAULT_MEMORY_BUDGET_MB)
        return DEFAULT_MEMORY_BUDGET_MB
    return value


def memory_estimate_mb(file_size_mb: float, engine: str | None) -> float:
    """What a model will occupy once loaded, guessed before loading: its weights file's size; a quarter of
    it for the int8 variant (int8 weights)."""
    return file_size_mb / 4 if engine == "int8" else file_size_mb
