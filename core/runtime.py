"""Facts about the process the app runs in: which device, how many CPU threads, which precision, memory.

Every decision about how the hardware is used lives here, made once per process:

- `pick_device()`: the first GPU if there is one, else the CPU (and it sets torch's CPU threads);
- `configure_threads()`: torch's intra-op threads from the cgroup CPU quota, the CPUs this process
  may run on, or `ZOOSCOPE_TORCH_THREADS`;
- `use_channels_last(family, device)`: channels-last memory layout for CNNs on CUDA only;
- `model_precision(family, device)`: "fp32" or "bf16" (autocast) from `ZOOSCOPE_PRECISION` and,
  for `auto`, a one-off check that bf16 keeps the offline model's top-1 answers.
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
    with _threads_lock:
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

# Families (core.catalog's names; resnext and wide_resnet are "resnet") whose compute is mostly 2-D
# convolutions on NCHW feature maps: cuDNN runs those fastest on channels-last (NHWC) tensors
# (efficientnet_b0 1.56x on an H100). Transformers work on token sequences (vit), already permute
# to NHWC themselves (swin) or mix attention with convolutions (maxvit): left alone. A family
# not listed here is left alone too: the layout is an optimisation, never a requirement.
CHANNELS_LAST_FAMILIES = frozenset(
    {
        "alexnet",
        "convnext",
        "densenet",
        "efficientnet",
        "efficientnet_lite",
        "googlenet",
        "inception",
        "mnasnet",
        "mobilenet_v2",
        "mobilenet_v3",
        "regnet",
        "resnet",
        "shufflenet_v2",
        "squeezenet",
        "vgg",
    }
)


def use_channels_last(family: str, device: torch.device | str) -> bool:
    """Whether a model of `family` on `device` should hold its weights (and take inputs) channels-last."""
    return torch.device(device).type == "cuda" and family in CHANNELS_LAST_FAMILIES


# --- precision ------------------------------------------------------------------------------------

PRECISION_ENV = "ZOOSCOPE_PRECISION"
PRECISIONS = ("fp32", "bf16", "auto")
AGREEMENT_GOAL = 0.99  # bf16's top-1 must match fp32's on at least this share of the check's images
AGREEMENT_MODEL = "efficientnet_lite0"  # the offline model: real ImageNet weights, always available

# Where bf16 autocast was measured slower than fp32 even at batch 64 (H100, mobilenet_v3_large and
# efficientnet_b0; depthwise convolutions do not use the tensor cores): `auto` keeps these in fp32.
BF16_SLOWER_FAMILIES = frozenset({"efficientnet", "efficientnet_lite", "mnasnet", "mobilenet_v2", "mobilenet_v3"})


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
    family: str | None = None,
    agreement: Callable[[], float],
    bf16_supported: Callable[[], bool] | None = None,
) -> str:
    """The one precision decision: "fp32" or "bf16" for a model of `family` on `device`.

    - fp32: always fp32.
    - bf16: bf16 autocast wherever the device supports it (asked for explicitly, so also on the CPU).
    - auto: fp32 on the CPU; on CUDA, bf16 only if the device supports it, the family is not one
      that bf16 slows down, and `agreement()` (top-1 agreement of bf16 with fp32 on real photos,
      computed lazily: only this branch calls it) is at least AGREEMENT_GOAL.
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
    if device.type != "cuda" or family in BF16_SLOWER_FAMILIES or not supported():
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


_agreement_lock = threading.Lock()
_agreement_cache: dict[str, float] = {}


def bf16_check(device: torch.device | str) -> float:
    """Top-1 agreement between fp32 and bf16 autocast for the offline model on `device`: run once
    per process and device type, then cached (about a second on a GPU)."""
    device = torch.device(device)
    with _agreement_lock:
        if device.type not in _agreement_cache:
            from core.loading import load_model  # core.loading imports this module
            from core.predict import agreement_images, bf16_agreement

            try:
                reference = load_model(AGREEMENT_MODEL, device, precision="fp32")
                value = bf16_agreement(reference, agreement_images())
                del reference
            except Exception as error:  # a check that cannot run must never stop a model loading
                _log.warning("the bf16 check could not run (%s); models stay in fp32", error)
                value = 0.0
            _log.info("bf16 autocast agrees with fp32 on %.1f%% of the check's images", value * 100)
            _agreement_cache[device.type] = value
        return _agreement_cache[device.type]


def model_precision(family: str | None, device: torch.device | str, requested: str | None = None) -> str:
    """The precision a model of `family` runs in on `device`: `requested`, else ZOOSCOPE_PRECISION."""
    return resolve_precision(
        requested_precision() if requested is None else requested,
        device,
        family=family,
        agreement=lambda: bf16_check(device),
    )
