"""Many models measured in a row, resumable: every row goes into a cache file as soon as it is measured,
and a model already measured on the same machine (same CPU, cores, threads and versions) is not
measured again. Models are measured cheapest first where the caller gives no order, so a time budget
covers as many as it can; the ones it does not reach are listed, for the latency model to predict.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from core.choose.machine import Machine
from core.choose.measure import DEFAULT_SETTINGS, Settings, measure_model
from core.choose.table import conform, empty_table, read_table, write_table
from core.models.catalog import get_spec
from core.progress import Progress

CACHE_NAME = "measurements.parquet"
FINAL = ("measured", "failed")  # a skipped row (too big for the memory left then) is tried again

_cache_lock = threading.Lock()  # several sessions may measure at once: one read-modify-write at a time


def cache_file() -> Path:
    """The cache of every row measured on this machine: ZOOSCOPE_CACHE_DIR/choose/measurements.parquet."""
    from core.engines.onnx_cache import cache_root

    return cache_root().path / "choose" / CACHE_NAME


def read_cache(path: Path) -> pd.DataFrame:
    """The cached rows, or an empty table where there is no cache (or it cannot be read: it is rebuilt)."""
    if not path.exists():
        return empty_table()
    try:
        return read_table(path)
    except Exception:  # a cache cut short by a crash is measurements lost, not an error to show
        return empty_table()


_KEY = ["model", "runtime", "machine"]  # one row per model and runtime on each machine


def _append(path: Path, rows: list[dict]) -> pd.DataFrame:
    """`rows` written into the cache in place of any older rows of theirs; returns the cache as written
    (read again under the lock: another session may have added rows meanwhile)."""
    with _cache_lock:
        cached = read_cache(path)
        fresh = conform(pd.DataFrame(rows))
        stale = pd.MultiIndex.from_frame(cached[_KEY]).isin(pd.MultiIndex.from_frame(fresh[_KEY]))
        table = pd.concat([cached[~stale], fresh], ignore_index=True)
        write_table(table, path)
        return table


def cheapest_first(names: Sequence[str]) -> list[str]:
    return sorted(names, key=lambda name: (get_spec(name).gflops, name))


@dataclass
class BenchRun:
    table: pd.DataFrame  # this machine's rows for the models asked for, measured now or before
    measured_now: list[str] = field(default_factory=list)
    from_cache: list[str] = field(default_factory=list)
    not_reached: list[str] = field(default_factory=list)  # the time budget ran out first


def _rows_for(cached: pd.DataFrame, name: str, machine: Machine) -> pd.DataFrame:
    return cached[cached["model"].eq(name) & cached["machine"].eq(machine.key) & cached["status"].isin(FINAL)]


def bench_models(
    names: Sequence[str],
    runtimes: Sequence[str],
    machine: Machine,
    *,
    settings: Settings = DEFAULT_SETTINGS,
    cache: Path | None = None,
    progress: Progress | None = None,
    time_budget_s: float | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> BenchRun:
    """Measure `names` (in this order) in `runtimes` on `machine`, resuming from `cache`."""
    path = cache or cache_file()
    run = BenchRun(table=empty_table())
    start = time.monotonic()
    cached = read_cache(path)
    for index, name in enumerate(names):
        if should_stop() or (time_budget_s is not None and time.monotonic() - start > time_budget_s):
            run.not_reached = list(names[index:])
            break
        done = _rows_for(cached, name, machine)
        todo = [runtime for runtime in runtimes if runtime not in set(done["runtime"])]
        if not todo:
            run.from_cache.append(name)
            continue
        if progress:
            progress(index, len(names), f"measuring {name} ({', '.join(todo)})")
        rows = measure_model(get_spec(name), todo, machine, settings)
        cached = _append(path, rows)
        run.measured_now.append(name)
    if progress:
        progress(len(names), len(names), "measured")
    mine = cached[
        cached["machine"].eq(machine.key) & cached["model"].isin(list(names)) & cached["runtime"].isin(list(runtimes))
    ]
    run.table = conform(mine)
    return run
