"""One batch run: everything that can fail for the whole run fails first, then the chosen engine works.

Before any image is read: the model's name (UnknownModel), OUT (OutputError: a file, not writable,
another job's rows, rows without --resume), Ray being installed for `--engine ray`, SOURCE
(SourceError), and the model itself (its weights, WeightsUnavailable), loaded here on the driver.
Loading it here also makes its ONNX export on this machine once, so that a local Ray's actors
only read the verified cache instead of all exporting at once.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from typing import Literal

from core.batch.output import Output, prepare_output, read_rows
from core.batch.sources import list_source
from core.batch.work import BatchJob, BatchWorker
from core.errors import ZooScopeError
from core.models.catalog import get_spec
from core.progress import Progress

Engine = Literal["local", "ray"]
ENGINES: tuple[Engine, ...] = ("local", "ray")
RAY_MISSING = (
    "Ray is not installed: `pip install -r requirements-batch.txt` installs it for the command line "
    "(the app does not need it)."
)


@dataclass(frozen=True)
class BatchReport:
    """What a run did: files listed, already in OUT (skipped), read now, their errors, and OUT's total."""

    engine: Engine
    runtime: str  # what ran the model: torch, onnx or int8
    listed: int
    skipped: int  # already in OUT (--resume)
    done: int  # rows this run wrote
    errors: int  # of those, rows with an error
    rows: int  # rows in OUT now
    seconds: float
    notes: tuple[str, ...] = ()  # damaged parts set aside, files left out for their extension

    @property
    def per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def as_json(self) -> dict:
        return {**self.__dict__, "notes": list(self.notes), "per_second": round(self.per_second, 2)}


def run_batch(
    job: BatchJob,
    source: str,
    out: str,
    *,
    engine: Engine = "local",
    address: str | None = None,
    resume: bool = False,
    progress: Progress | None = None,
) -> BatchReport:
    """Classify or embed every file of SOURCE into OUT (see core.batch); ZooScopeError before any
    image is read when the run cannot be done."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if address and engine != "ray":
        raise ZooScopeError("--address joins a Ray cluster: it goes with --engine ray.")
    get_spec(job.model)
    if engine == "ray" and importlib.util.find_spec("ray") is None:
        raise ZooScopeError(RAY_MISSING)
    output = prepare_output(out, job, resume=resume)
    listing = list_source(source)
    todo = listing.without(output.done)
    notes = list(output.set_aside)
    if listing.skipped:
        notes.append(f"files in {source} left out, not images by their extension: {listing.skipped}")
    start = time.perf_counter()
    worker = BatchWorker(job) if len(todo) else None  # the model's weights: checked before any image is read
    runtime = worker.runtime if worker else ""
    if worker and engine == "local":
        from core.batch.local import run_local

        run_local(worker, todo, output, progress=progress)
    elif worker:
        from core.batch.ray_engine import ray_session, run_ray

        del worker  # the actors load their own; this process only checked it and warmed the ONNX cache
        with ray_session(address):
            run_ray(job, todo, output)
    seconds = time.perf_counter() - start
    rows, errors = _rows_and_errors(output, set(todo.names()))
    return BatchReport(
        engine=engine,
        runtime=runtime,
        listed=len(listing),
        skipped=len(listing) - len(todo),
        done=len(todo),
        errors=errors,
        rows=rows,
        seconds=seconds,
        notes=tuple(notes),
    )


def _rows_and_errors(output: Output, names: set[str]) -> tuple[int, int]:
    """Rows in OUT, and how many of those of `names` hold an error."""
    table = read_rows(output, ["file", "error"])
    if not table.num_rows:
        return 0, 0
    files, errors = table.column("file").to_pylist(), table.column("error").to_pylist()
    return table.num_rows, sum(1 for name, error in zip(files, errors, strict=True) if error and name in names)
