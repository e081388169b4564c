"""The local engine: the same BatchWorker as Ray's actors, in one streaming loop on this machine.

Memory stays bounded whatever the number of files: one batch of file bytes being worked on, the
next one being read by a background thread (so reading from a bucket overlaps the forward passes),
and at most one part's rows (core.batch.output.PART_ROWS) waiting to be written.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from core.batch.output import PART_ROWS, Output, PartWriter
from core.batch.sources import NOT_A_FILE, Listing, input_schema, read_file
from core.batch.work import BatchWorker
from core.progress import Progress

if TYPE_CHECKING:
    import pyarrow as pa


def run_local(
    worker: BatchWorker,
    listing: Listing,
    output: Output,
    *,
    progress: Progress | None = None,
    rows_per_file: int = PART_ROWS,
) -> int:
    """Every file of `listing` through `worker`, its rows written to `output`; returns the rows written."""
    writer = PartWriter(output, worker.schema, rows_per_file)
    total, done = len(listing), 0
    verb = "Classified" if worker.job.kind == "classify" else "Embedded"
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-read") as reader:
        chunks = _chunks(listing, worker.job.batch_size)
        pending = reader.submit(_read_chunk, listing, next(chunks, []))
        while True:
            batch = pending.result()
            if not batch.num_rows:
                break
            pending = reader.submit(_read_chunk, listing, next(chunks, []))
            writer.add(worker(batch))
            done += batch.num_rows
            if progress:
                progress(done, total, f"{verb} {done} of {total} files with {worker.model.name}")
    writer.close()
    return writer.rows


def _chunks(listing: Listing, size: int) -> Iterator[list[tuple[str, bool]]]:
    """(path, is a regular file) in batches of `size`: the files, then the entries that are not files."""
    entries = [(path, True) for path in listing.files] + [(path, False) for path in listing.not_files]
    for start in range(0, len(entries), size):
        yield entries[start : start + size]


def _read_chunk(listing: Listing, chunk: list[tuple[str, bool]]) -> pa.Table:
    import pyarrow as pa

    rows = []
    for path, regular in chunk:
        data, error = read_file(listing.filesystem, path) if regular else (None, NOT_A_FILE)
        rows.append({"file": listing.name(path), "bytes": data, "error": error})
    return pa.Table.from_pylist(rows, schema=input_schema())
