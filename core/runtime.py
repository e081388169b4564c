"""Facts about the process the app runs in: which device, how much memory."""

from __future__ import annotations

import functools

import psutil
import torch


@functools.cache
def pick_device() -> torch.device:
    """Chosen once per process: the first GPU if there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)}"
    return f"CPU ({psutil.cpu_count(logical=True)} threads, torch uses {torch.get_num_threads()})"


def process_memory_mb() -> float:
    """Resident memory of this process, in MiB."""
    return psutil.Process().memory_info().rss / 2**20
