"""What to measure first: a few models across the families (so the latency model has something to fit),
then whichever models the recommendation names that are still predicted, until the top ones are
measured. A person asking "what fits in 20 ms" gets measured answers in a minute, not after the
whole catalogue. Also the two tables chosen from, each with its unmeasured models predicted: this
machine's (from the cache) and another device's (from a file)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from core.choose.bench_models import bench_models, cheapest_first, read_cache
from core.choose.frontier import Budget, recommend
from core.choose.machine import Machine
from core.choose.measure import DEFAULT_SETTINGS, Settings
from core.choose.predict import catalogue_frame, with_predictions
from core.choose.table import RUNTIMES, conform, read_table
from core.progress import Progress

# Small and mid-sized models from the families people pick from: cheap to measure (about a minute in
# torch on 2 cores) and spread enough for the latency model's family effects.
SEED = (
    "mobilenet_v3_small",
    "squeezenet1_1",
    "shufflenet_v2_x1_0",
    "mnasnet1_0",
    "efficientnet_lite0",
    "mobilenet_v3_large",
    "regnet_y_800mf",
    "resnet18",
    "efficientnet_b0",
    "densenet121",
    "resnet50",
    "convnext_tiny",
    "swin_t",
    "vit_b_16",
)


def runtimes_for(choice: str) -> tuple[str, ...]:
    return RUNTIMES if choice == "any" else (choice,)


def machine_table(machine: Machine, runtimes: Sequence[str], cache: Path | None = None) -> pd.DataFrame:
    """Everything measured on `machine` (the cache), plus predicted rows for every other catalogue model."""
    from core.choose.bench_models import cache_file

    cached = read_cache(cache or cache_file())
    mine = conform(cached[cached["machine"].eq(machine.key) & cached["runtime"].isin(list(runtimes))])
    return with_predictions(mine, catalogue_frame(), runtimes)


def device_table(source: str | Path | bytes, runtime_choice: str, name: str = "") -> pd.DataFrame:
    """A table measured on another device (a file's path or bytes), its other catalogue models predicted from
    its own measurements. Raises BadTable for a file that is not one."""
    runtimes = runtimes_for(runtime_choice)
    return with_predictions(read_table(source, name), catalogue_frame(), runtimes)


def still_predicted(table: pd.DataFrame, budget: Budget, count: int = 3) -> list[tuple[str, str]]:
    """(model, runtime) of the recommended rows whose latency is not measured yet."""
    return [
        (pick.row["model"], pick.row["runtime"]) for pick in recommend(table, budget, count) if not pick.row["measured"]
    ]


def settle(
    budget: Budget,
    machine: Machine,
    *,
    cache: Path | None = None,
    settings: Settings = DEFAULT_SETTINGS,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    rounds: int = 4,
    count: int = 3,
) -> pd.DataFrame:
    """Measure the seed models, then the recommended ones still predicted, until the top `count` are
    all measured (or `rounds` passes); returns this machine's table with predictions."""
    runtimes = runtimes_for(budget.runtime)
    bench_models(cheapest_first(list(SEED)), runtimes, machine, settings=settings, cache=cache, progress=progress,
                 should_stop=should_stop)  # fmt: skip
    table = machine_table(machine, runtimes, cache)
    for _ in range(rounds):
        todo = still_predicted(table, budget, count)
        if not todo or should_stop():
            break
        for model, runtime in todo:
            bench_models([model], [runtime], machine, settings=settings, cache=cache, progress=progress,
                         should_stop=should_stop)  # fmt: skip
        table = machine_table(machine, runtimes, cache)
    return table
