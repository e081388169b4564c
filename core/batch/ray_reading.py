"""Ray Data reading the files a Listing names: one row `file, bytes, error` per file, whatever happens.

`ListedFiles` is a FileBasedDatasource, Ray's own base class for file formats: Ray Data's read tasks,
pyarrow filesystems and retries of transient errors do the reading. It differs from
`ray.data.read_binary_files` where that would lose a row:

- it reads exactly the listed files (core.batch.sources): Ray's own listing skips every name that
  starts with "_" or ".", and stats each file again, failing the run on one that is gone by then;
- a file that cannot be opened or read is a row with its error: `read_binary_files` fails the
  whole run on it;
- the bytes are never decompressed by their extension (`x.jpg.gz`), as the local engine reads them.

This module is what Ray's read tasks import to run it: it stays light (no torch, no model).
"""

from __future__ import annotations

import pyarrow as pa
from ray.data.datasource import DefaultFileMetadataProvider, FileBasedDatasource

from core.batch.sources import Listing, input_schema, read_error

READ_THREADS = 8  # files read at once by each read task: what hides a bucket's latency per request


class _Unopened:
    """What the datasource gets in place of a file that could not be opened: the reason, as a context."""

    def __init__(self, error: OSError):
        self.error = error

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Listed(DefaultFileMetadataProvider):
    """The listing's files and sizes, as they are (Ray would otherwise stat every file again)."""

    def __init__(self, paths: list[str], sizes: list[int | None]):
        self._listed: list[tuple[str, int | None]] | None = list(zip(paths, sizes, strict=True))

    def expand_paths(self, paths, filesystem, partitioning=None, ignore_missing_paths=False):
        listed, self._listed = self._listed or [], None  # every read task carries this object: not the list
        yield from listed


class ListedFiles(FileBasedDatasource):
    """The regular files of `listing` as rows (core.batch.sources.input_schema), one per file."""

    _NUM_THREADS_PER_TASK = READ_THREADS

    def __init__(self, listing: Listing):
        provider = _Listed(listing.files, listing.sizes)
        super().__init__(listing.files, filesystem=listing.filesystem, meta_provider=provider)
        self.prefix = listing.prefix

    def resolve_compression(self, path, open_args):
        return None  # the bytes as stored

    def _open_input_source(self, filesystem, path, **open_args):
        try:
            return super()._open_input_source(filesystem, path, **open_args)
        except OSError as error:  # Ray's filesystem wrapper has already retried what is worth retrying
            return _Unopened(error)

    def _read_stream(self, f, path: str):
        data, error = None, None
        if isinstance(f, _Unopened):
            error = read_error(f.error)
        else:
            try:
                data = f.readall()
            except OSError as failure:
                error = read_error(failure)
        yield pa.table({"file": [self.prefix + path], "bytes": [data], "error": [error]}, schema=input_schema())

    def _rows_per_file(self):
        return 1
