"""Choose's tables as the page sees them: this machine's (measured rows from the cache, the rest
predicted), the latency model's error on them, and measuring here through the job queue."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.choose.bench_models import bench_models, cheapest_first
from core.choose.frontier import Budget
from core.choose.machine import Machine, this_machine
from core.choose.measure import Settings, estimated_seconds, memory_need_mb
from core.choose.predict import median_leave_out_error
from core.choose.shortlist import SEED, machine_table, runtimes_for, settle
from core.choose.table import measured_rows
from core.jobs.limits import memory_limit_mb
from core.models.catalog import all_specs, get_spec
from ui.jobs import in_line
from ui.progress import progress_bar


def table_here(budget: Budget) -> tuple[pd.DataFrame, Machine]:
    machine = this_machine()
    return machine_table(machine, runtimes_for(budget.runtime)), machine


def prediction_errors(table: pd.DataFrame, runtimes: tuple[str, ...]) -> dict[str, float]:
    """Per runtime, the latency model's median error on each measured model left out of its fit."""
    measured = measured_rows(table)
    errors = {runtime: _leave_out_error(measured, runtime) for runtime in runtimes}
    return {runtime: error for runtime, error in errors.items() if error is not None}


@st.cache_data(show_spinner=False, max_entries=16)  # one fit per model left out: once per table, not per rerun
def _leave_out_error(measured: pd.DataFrame, runtime: str) -> float | None:
    return median_leave_out_error(measured, runtime)


def measure(budget: Budget, machine: Machine, *, every_model: bool) -> pd.DataFrame:
    """Measure here, in line with the other visitors' heavy work: the short list, or every model
    (cheapest first). Cancelling keeps what was measured so far. Returns the table afterwards."""
    runtimes = runtimes_for(budget.runtime)
    names = cheapest_first(list(all_specs())) if every_model else list(SEED)
    label = f"Measuring {'every model' if every_model else 'the short list'} ({', '.join(runtimes)})"
    # Admitted by the biggest model that may use a third of the host's memory; bigger ones are skipped
    # with that reason (a 2.7 GB host never measures vit_h_14's 2.4 GB of weights beside its visitors).
    needs = [memory_need_mb(get_spec(name), runtimes) for name in names]
    memory = max([need for need in needs if need <= memory_limit_mb() / 3] or [min(needs)])
    settings = Settings(memory_cap_mb=memory)
    estimate = sum(estimated_seconds(get_spec(name), runtimes) for name in names)
    with in_line("measure", label, memory_mb=memory, estimate_s=estimate) as job, progress_bar(label) as progress:
        if every_model:
            bench_models(names, runtimes, machine, settings=settings, progress=progress, should_stop=job.cancelled)
        else:
            settle(budget, machine, settings=settings, progress=progress, should_stop=job.cancelled)
    return machine_table(machine, runtimes)
