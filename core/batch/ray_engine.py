"""The Ray engine: Ray Data reads the files, an actor pool runs BatchWorker, `write_parquet` writes OUT.

- Reading: Ray Data's read tasks read the files core.batch.sources listed, through
  core.batch.ray_reading.ListedFiles (a file it cannot open or read is a row with its error).
- Work: `map_batches(BatchWorker, compute=ActorPoolStrategy(...))`: each actor loads the model once
  (in BatchWorker's constructor) and decodes, preprocesses and runs the batches sent to it. Bytes,
  not decoded pixels, travel through the object store: a JPEG is several times smaller than its
  224 x 224 float tensor.
- Writing: `write_parquet` into OUT, a file every core.batch.output.PART_ROWS rows or so.

This module imports ray at its top: only core.batch.run imports it, and only for `--engine ray`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import ray

from core import runtime
from core.batch.output import PART_ROWS, Output
from core.batch.ray_reading import ListedFiles
from core.batch.sources import NOT_A_FILE, Listing, input_schema
from core.batch.work import BatchJob, BatchWorker

LOCAL_OBJECT_STORE_BYTES = 512 * 2**20  # a local Ray's shared memory: thousands of photos in flight
CPUS_PER_ACTOR = 1  # each actor runs its model on one thread; more actors, not more threads, use more cores
CORE = Path(__file__).resolve().parents[1]
# Settings each actor needs as the driver has them (threads are the actor's own: CPUS_PER_ACTOR).
FORWARDED_ENV = (
    "ZOOSCOPE_WEIGHTS_DIR",
    "ZOOSCOPE_OFFLINE",
    "ZOOSCOPE_CACHE_DIR",
    "ZOOSCOPE_MAX_PIXELS",
    "ZOOSCOPE_PRECISION",
    "ZOOSCOPE_RUNTIME",
    # malloc.env's glibc settings, when the command runs under them: read by each worker at its start.
    "MALLOC_ARENA_MAX",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
)


def runtime_env() -> dict:
    """Ray's runtime environment for this job: the `core` package shipped to every worker (on this
    machine or a cluster's, the same way), the driver's ZooScope settings, one thread per actor."""
    env = {name: os.environ[name] for name in FORWARDED_ENV if os.environ.get(name)}
    env["ZOOSCOPE_TORCH_THREADS"] = str(CPUS_PER_ACTOR)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return {"py_modules": [str(CORE)], "excludes": ["__pycache__"], "env_vars": env}


@contextlib.contextmanager
def ray_session(
    address: str | None = None, *, num_cpus: int | None = None, temp_dir: str | None = None
) -> Iterator[None]:
    """Ray for the length of a run: join the cluster at `address`, or start a local Ray on the CPUs
    this process may use (core.runtime.available_cpus), no dashboard, no usage statistics, quiet, its
    session files under `temp_dir` (default: the system's temporary folder). A Ray already started in
    this process (a notebook, a test) is used as it is and left running."""
    if ray.is_initialized():
        yield
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # read by ray.init, before anything is sent
    with contextlib.ExitStack() as stack:
        if address:
            ray.init(address=address, runtime_env=runtime_env(), logging_level=logging.WARNING)
        else:
            stack.enter_context(_local_token())
            ray.init(
                num_cpus=num_cpus or runtime.available_cpus(),
                include_dashboard=False,
                object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                _temp_dir=temp_dir or os.path.join(tempfile.gettempdir(), "ray"),
                runtime_env=runtime_env(),
                logging_level=logging.WARNING,
            )
        try:
            yield
        finally:
            ray.shutdown()


@contextlib.contextmanager
def _local_token() -> Iterator[None]:
    """A local Ray's authentication token, for this run only, in the environment its processes
    inherit: Ray would otherwise write one into ~/.ray/auth_token. A token or an authentication mode
    the person set is left as it is."""
    if any(os.environ.get(name) for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE")):
        yield
        return
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    # Ray would warn that it enabled token authentication (and how to opt out): it is this run's own token.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    try:
        yield
    finally:
        os.environ.pop("RAY_AUTH_TOKEN", None)


def run_ray(job: BatchJob, listing: Listing, output: Output) -> None:
    """Every file of `listing` through BatchWorker actors on the Ray this process is connected to
    (see `ray_session`), the rows written into `output` by Ray Data's `write_parquet`."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = sys.stderr.isatty()
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled": not a tty
    actors = max(1, int(ray.cluster_resources().get("CPU", 1)) // CPUS_PER_ACTOR)
    data = None
    if listing.files:
        # Reading waits on I/O, not on a CPU: the read tasks reserve none (the actors hold them all),
        # and as many run at once as there are actors to feed.
        data = ray.data.read_datasource(
            ListedFiles(listing), num_cpus=0, compute=ray.data.TaskPoolStrategy(size=actors)
        )
    if listing.not_files:
        rows = [{"file": listing.name(path), "bytes": None, "error": NOT_A_FILE} for path in listing.not_files]
        others = ray.data.from_arrow(pa.Table.from_pylist(rows, schema=input_schema()))
        data = others if data is None else data.union(others)
    if data is None:
        return  # an empty listing: nothing to read or write (run_batch never sends one)
    rows = data.map_batches(
        BatchWorker,
        fn_constructor_args=(job,),
        batch_size=job.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=CPUS_PER_ACTOR,
    )
    rows.write_parquet(
        output.path,
        filesystem=output.filesystem,
        min_rows_per_file=PART_ROWS,
        ray_remote_args={"num_cpus": 0},
    )
