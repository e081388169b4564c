"""What machine a benchmark ran on: CPU model, cores, memory, load, torch, GPU."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.jobs.limits import cpu_model  # noqa: E402 - after the path setup


def memory_gib() -> float | None:
    try:
        import psutil

        return psutil.virtual_memory().total / 2**30
    except Exception:
        return None


def gpu_name() -> str:
    import torch

    if not torch.cuda.is_available():
        return "no GPU"
    return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))


def describe() -> dict:
    """The machine as plain values (for JSON and for the report)."""
    import torch
    import torchvision

    from core.runtime import cgroup_cpu_quota, thread_count, usable_cpus

    load = os.getloadavg()
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "cgroup_cpu_quota": cgroup_cpu_quota(),
        "zooscope_threads": thread_count(),
        "memory_gib": memory_gib(),
        "load_average": load,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "gpu": gpu_name(),
        "platform": platform.platform(),
    }


def markdown(facts: dict | None = None) -> str:
    facts = facts or describe()
    quota = facts["cgroup_cpu_quota"]
    memory = facts["memory_gib"]
    rows = [
        ("date", facts["date"]),
        ("CPU", facts["cpu"]),
        (
            "cores",
            f"{facts['logical_cpus']} logical, {facts['usable_cpus']} usable by this process, cgroup quota "
            + ("none" if quota is None else f"{quota:g} CPUs")
            + f" (ZooScope would run {facts['zooscope_threads']} torch threads)",
        ),
        ("memory", "unknown" if memory is None else f"{memory:.1f} GiB"),
        ("load average at start (1, 5, 15 min)", ", ".join(f"{x:.2f}" for x in facts["load_average"])),
        ("GPU", facts["gpu"]),
        ("Python / torch / torchvision", f"{facts['python']} / {facts['torch']} / {facts['torchvision']}"),
        ("OS", facts["platform"]),
    ]
    return "\n".join(["| | |", "| --- | --- |", *(f"| {key} | {value} |" for key, value in rows)])


if __name__ == "__main__":
    print(markdown())
