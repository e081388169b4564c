"""Measurement tables for Choose's tests: real catalogue models, made-up latencies (no model is run)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from core.choose.machine import Machine, this_machine
from core.choose.measure import base_row
from core.choose.table import write_table
from core.models.catalog import get_spec

MODELS = (
    "mobilenet_v3_small", "squeezenet1_1", "shufflenet_v2_x1_0", "mnasnet1_0", "efficientnet_lite0",
    "mobilenet_v3_large", "regnet_y_800mf", "resnet18", "efficientnet_b0", "densenet121", "resnet50",
    "convnext_tiny", "vgg16", "vit_b_16",
)  # fmt: skip


def latency_ms(name: str, runtime: str = "torch") -> float:
    """A made-up latency that grows with the work, as a real one does: 2 ms + 8 ms a GFLOP (int8 4x less)."""
    latency = 2.0 + 8.0 * get_spec(name).gflops
    return latency / 4 if runtime == "int8" else latency


def fake_table(
    machine: Machine | None = None, models: tuple[str, ...] = MODELS, runtimes: tuple[str, ...] = ("torch",)
) -> pd.DataFrame:
    machine = machine or this_machine()
    rows = []
    for name in models:
        for runtime in runtimes:
            spec = get_spec(name)
            row = base_row(spec, runtime, machine)
            size = spec.file_size_mb if runtime != "int8" else row["int8_size_mb"]
            rows.append(
                row | {"status": "measured", "reason": "", "measured": True, "latency_ms": latency_ms(name, runtime),
                       "throughput_ips": 8000 / (8 * latency_ms(name, runtime)), "size_mb": size,
                       "memory_mb": size + 20.0}
            )  # fmt: skip
    return pd.DataFrame(rows)


def write_cache(cache_dir: Path, table: pd.DataFrame) -> Path:
    """`table` where this machine's measurements are kept under ZOOSCOPE_CACHE_DIR=`cache_dir`."""
    return write_table(table, cache_dir / "choose" / "measurements.parquet")
