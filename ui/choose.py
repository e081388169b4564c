"""Choose's tables as the page sees them: this machine's (measured rows from the cache, the rest
predicted), another device's (loaded from a file), and measuring here through the job queue."""

from __future__ import annotations

import pandas as pd

from core.choose.bench_models import bench_models, cheapest_first
from core.choose.frontier import Budget
from core.choose.machine import Machine, this_machine
from core.choose.measure import estimated_seconds, memory_need_mb
from core.choose.predict import catalogue_frame, with_predictions
from core.choose.shortlist import SEED, machine_table, runtimes_for, settle
from core.choose.table import read_table
from core.models.catalog import all_specs, get_spec
from ui.jobs import in_line
from ui.progress import progress_bar


def table_here(budget: Budget) -> tuple[pd.DataFrame, Machine]:
    machine = this_machine()
    return machine_table(machine, runtimes_for(budget.runtime)), machine


def device_table(data: bytes, name: str, budget: Budget) -> pd.DataFrame:
    """Another device's table, its missing models predicted from its own measurements (raises BadTable)."""
    return with_predictions(read_table(data, name), catalogue_frame(), runtimes_for(budget.runtime))


def measure(budget: Budget, machine: Machine, *, every_model: bool) -> pd.DataFrame:
    """Measure here, in line with the other visitors' heavy work: the short list, or every model
    (cheapest first). Cancelling keeps what was measured so far. Returns the table afterwards."""
    runtimes = runtimes_for(budget.runtime)
    names = cheapest_first(list(all_specs())) if every_model else list(SEED)
    label = f"Measuring {'every model' if every_model else 'the short list'} ({', '.join(runtimes)})"
    # Admitted by the biggest of the short list; a bigger model is skipped at its turn if it does not fit.
    memory = max(memory_need_mb(get_spec(name), runtimes) for name in SEED)
    estimate = sum(estimated_seconds(get_spec(name), runtimes) for name in names)
    with in_line("measure", label, memory_mb=memory, estimate_s=estimate) as job, progress_bar(label) as progress:
        if every_model:
            bench_models(names, runtimes, machine, progress=progress, should_stop=job.cancelled)
        else:
            settle(budget, machine, progress=progress, should_stop=job.cancelled)
    return machine_table(machine, runtimes)
