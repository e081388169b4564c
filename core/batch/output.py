"""OUT: a folder of Parquet files, the same for both engines.

Ray Data's `write_parquet` writes a folder of files (one per write task), so the local engine writes
one too: a part file every `PART_ROWS` rows, each written under a hidden name and renamed into place
whole. A run that is stopped keeps every part it finished, `--resume` reads the `file` column of
them all and skips those files, and a run started by one engine can be resumed by the other.
pandas, pyarrow, DuckDB, Spark and Ray all read the folder as one table
(`pandas.read_parquet("OUT.parquet")`); they skip names that start with "." or "_", as this does.

Every part carries the job that wrote it (kind, model, top-k) in its Parquet metadata, so `--resume`
refuses to mix the rows of another model or command into OUT.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.batch.sources import resolve
from core.batch.work import METADATA_KEY, BatchJob
from core.errors import ZooScopeError

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.fs

PART_ROWS = 5_000  # rows per Parquet file: 25 MB of 1280-d embeddings, far more of top-k rows
SUFFIX = ".parquet"
WRITE_CHECK = ".zooscope-write-check"
DAMAGED = "_damaged-"  # a part a stopped run left half written, set aside (readers skip "_" names)


class OutputError(ZooScopeError):
    """OUT cannot be written, or already holds results that this run must not mix with."""


@dataclass
class Output:
    """OUT, checked: a folder this process can write to, and the files already in it."""

    location: str  # as the person wrote it
    filesystem: pyarrow.fs.FileSystem
    path: str  # in `filesystem`
    done: set[str] = field(default_factory=set)  # `file` of every row already in OUT
    set_aside: list[str] = field(default_factory=list)  # damaged parts renamed out of the way


def prepare_output(location: str, job: BatchJob, *, resume: bool) -> Output:
    """OUT made and checked writable before any image is read; with `resume`, the files it holds.

    OutputError when OUT is a file, cannot be written, holds another job's rows, or holds rows
    and `resume` is not set (a second run would add its rows beside the first's).
    """
    import pyarrow.fs as pafs

    try:
        filesystem, path, _ = resolve(location)
        found = filesystem.get_file_info(path)
    except (OSError, ZooScopeError) as error:
        raise OutputError(f"Cannot use {location} for the output: {error}") from None
    if found.type == pafs.FileType.File:
        raise OutputError(f"{location} is a file: --out names a folder of Parquet files (made if missing).")
    output = Output(location, filesystem, path)
    parts = part_files(filesystem, path) if found.type == pafs.FileType.Directory else []
    if parts and not resume:
        raise OutputError(
            f"{location} already holds results ({len(parts)} Parquet files): add --resume to skip the files "
            "in it and add the rest, or choose another folder."
        )
    for part in parts:
        _check_job(output, part, job)
    _check_writable(output)
    for part in parts:
        try:
            output.done.update(_read_table(filesystem, part, ["file"]).column("file").to_pylist())
        except _damage_errors() as error:
            output.set_aside.append(_set_aside(filesystem, part, error))
    return output


def part_files(filesystem: pyarrow.fs.FileSystem, path: str) -> list[str]:
    """The Parquet files in folder `path` that readers take (not hidden, not "_" names), sorted."""
    import pyarrow.fs as pafs

    selector = pafs.FileSelector(path, recursive=False, allow_not_found=True)
    return sorted(
        info.path
        for info in filesystem.get_file_info(selector)
        if info.type == pafs.FileType.File and info.base_name.endswith(SUFFIX) and info.base_name[0] not in "._"
    )


def read_rows(output: Output, columns: list[str] | None = None) -> pa.Table:
    """Every row in OUT (the chosen columns), as one table."""
    import pyarrow as pa

    tables = [_read_table(output.filesystem, part, columns) for part in part_files(output.filesystem, output.path)]
    return pa.concat_tables(tables, promote_options="default") if tables else pa.table({})


def _read_table(filesystem: pyarrow.fs.FileSystem, part: str, columns: list[str] | None) -> pa.Table:
    import pyarrow.parquet as pq

    return pq.read_table(part, columns=columns, filesystem=filesystem)


def _damage_errors() -> tuple[type[Exception], ...]:
    import pyarrow as pa

    return (OSError, pa.ArrowInvalid)


def _check_job(output: Output, part: str, job: BatchJob) -> None:
    """OutputError if `part` was written by another kind of job, model or top-k than `job`."""
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(part, filesystem=output.filesystem)
    except _damage_errors():
        return  # damaged: set aside when the files are read
    raw = (schema.metadata or {}).get(METADATA_KEY)
    theirs = json.loads(raw) if raw else {"kind": "classify" if "top1" in schema.names else "embed"}
    ours = job.describe()
    if any(ours.get(key) != value for key, value in theirs.items()):
        raise OutputError(
            f"{output.location} holds the rows of another job ({_job(theirs)}; this one: {_job(ours)}): "
            "resume with the same command, or choose another folder."
        )


def _job(described: dict) -> str:
    """A job in words: classify with resnet50, top-5."""
    words = f"{described.get('kind')} with {described.get('model', 'an unknown model')}"
    return f"{words}, top-{described['top_k']}" if "top_k" in described else words


def _check_writable(output: Output) -> None:
    """Make OUT and write (then delete) a small file in it: the only sure test, root or not, bucket or not."""
    probe = f"{output.path.rstrip('/')}/{WRITE_CHECK}"
    try:
        output.filesystem.create_dir(output.path, recursive=True)
        with output.filesystem.open_output_stream(probe) as stream:
            stream.write(b"ok")
        output.filesystem.delete_file(probe)
    except OSError as error:
        raise OutputError(f"Cannot write to {output.location}: {error.strerror or error}.") from None


def _set_aside(filesystem: pyarrow.fs.FileSystem, part: str, error: Exception) -> str:
    """Rename a part that cannot be read (a stopped run's half-written file) so readers skip it;
    its files are not in `done`, so this run does them again. Returns a sentence saying so."""
    folder, _, name = part.rpartition("/")
    target = f"{folder}/{DAMAGED}{name}"
    filesystem.move(part, target)
    return f"{part} could not be read ({error}); renamed to {target}, and its files are done again"


class PartWriter:
    """The local engine's writer: rows in, a Parquet part in OUT every `rows_per_file` rows (and at close)."""

    def __init__(self, output: Output, schema: pa.Schema, rows_per_file: int = PART_ROWS):
        import pyarrow.fs as pafs

        self.output = output
        self.schema = schema
        self.rows_per_file = rows_per_file
        self.run = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self.parts = 0
        self.rows = 0
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        # An object store publishes an object whole when its upload completes; a disk needs a rename.
        self._rename = isinstance(output.filesystem, pafs.LocalFileSystem)

    def add(self, table: pa.Table) -> None:
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows >= self.rows_per_file:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._pending_rows:
            return
        table = pa.concat_tables(self._pending).replace_schema_metadata(self.schema.metadata)
        name = f"part-{self.run}-{self.parts:05d}{SUFFIX}"
        folder = self.output.path.rstrip("/")
        final = f"{folder}/{name}"
        target = f"{folder}/.{name}.partial" if self._rename else final
        pq.write_table(table, target, filesystem=self.output.filesystem)
        if self._rename:
            self.output.filesystem.move(target, final)
        self.parts += 1
        self.rows += table.num_rows
        self._pending, self._pending_rows = [], 0

    def close(self) -> None:
        self.flush()
