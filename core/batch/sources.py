"""What a batch run reads, listed once on the driver: a folder, a glob, one file, or a URI.

SOURCE is read through pyarrow's filesystems, so a local path and `s3://bucket/photos/` (or `gs://`,
`hdfs://`, with the person's own credentials, as pyarrow finds them) are listed the same way:

- a folder: every file under it, at any depth, whose name says it is an image the app reads
  (core.datasets.sources.looks_like_image, as `python -m core embed` and the Features page decide); hidden
  files and folders (a name starting with ".": `.DS_Store`, `._IMG_1.jpg` from macOS, `.git/`) are
  skipped;
- a glob (`photos/*.jpg`, `s3://bucket/**/*.png`): every file it matches, whatever its extension,
  hidden ones skipped; `*`, `?` and `[...]` match within one name, `**` any number of folders;
- a file: that file.

Ray Data can list a folder too, but it skips every name that starts with "_" as well as "." (so a
Sony camera's `_DSC0001.JPG` would be lost) and fails on a path it cannot resolve: listing here
keeps every file a person means, and the engines read exactly this list.

core.datasets.sources lists uploads, local files and zips for the pages and `embed`; this lists what pyarrow
can reach (a bucket too), one file's bytes at a time, for runs of any size.

Entries that are not regular files (a named pipe, a socket) are kept as rows with an error, never
opened: reading a pipe would block.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.datasets.sources import SourceError, looks_like_image
from core.images import SUPPORTED_TYPES

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.fs

NOT_A_FILE = "This is not a regular file (a pipe, a socket or a device), so it was not read."
_GLOB = re.compile(r"[*?\[]")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]+://")


@dataclass(frozen=True)
class Listing:
    """The files of one SOURCE: paths as `filesystem` knows them, in a stable (sorted) order.

    `prefix` turns such a path into the name a person reads in the `file` column: "" for local
    files (absolute paths), "s3://" for S3 (whose paths start with the bucket), and so on.
    """

    filesystem: pyarrow.fs.FileSystem
    prefix: str
    files: list[str]
    sizes: list[int | None]
    not_files: list[str] = field(default_factory=list)  # listed but not regular files: rows with NOT_A_FILE
    skipped: int = 0  # files in a folder skipped for their extension

    def name(self, path: str) -> str:
        return self.prefix + path

    def names(self) -> list[str]:
        """Every row's `file`, regular or not."""
        return [self.name(path) for path in [*self.files, *self.not_files]]

    def __len__(self) -> int:
        return len(self.files) + len(self.not_files)

    def without(self, done: set[str]) -> Listing:
        """This listing less the files whose name is in `done` (a resumed run)."""
        keep = [(path, size) for path, size in zip(self.files, self.sizes, strict=True) if self.name(path) not in done]
        return Listing(
            filesystem=self.filesystem,
            prefix=self.prefix,
            files=[path for path, _ in keep],
            sizes=[size for _, size in keep],
            not_files=[path for path in self.not_files if self.name(path) not in done],
            skipped=self.skipped,
        )


def resolve(location: str) -> tuple[pyarrow.fs.FileSystem, str, str]:
    """(filesystem, path in it, prefix for names) for a local path or a URI; SourceError if pyarrow
    cannot reach it (an unknown scheme, a filesystem pyarrow was built without, bad credentials)."""
    import pyarrow.fs as pafs

    if not _SCHEME.match(location) or location.startswith("file://"):
        local = location.removeprefix("file://")
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(local)), ""
    try:
        filesystem, path = pafs.FileSystem.from_uri(location)
    except (OSError, ValueError, ImportError) as error:
        raise SourceError(f"Cannot open {location}: {error}") from None
    scheme = location.split("://", 1)[0]
    return filesystem, path, f"{scheme}://"


def list_source(source: str) -> Listing:
    """Every file SOURCE names (see the module's docstring); SourceError if there is none."""
    import pyarrow.fs as pafs

    base, pattern = source, None
    found = _info(*resolve(source)[:2], source)
    if found.type == pafs.FileType.NotFound:  # a name that exists is never taken for a glob
        base, pattern = _split_glob(source)
        found = _info(*resolve(base)[:2], source) if pattern else found
    if found.type == pafs.FileType.NotFound:
        raise SourceError(f"{source} does not exist.")
    filesystem, root, prefix = resolve(base)
    if pattern is None and found.type != pafs.FileType.Directory:
        entries, skipped = [found], 0
    else:
        try:
            below = filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
        except OSError as error:
            raise SourceError(f"Cannot list {source}: {error}") from None
        entries, skipped = _select(below, root, pattern)
    entries.sort(key=lambda info: info.path)
    files = [info for info in entries if info.type == pafs.FileType.File]
    listing = Listing(
        filesystem=filesystem,
        prefix=prefix,
        files=[info.path for info in files],
        sizes=[info.size for info in files],
        not_files=[info.path for info in entries if info.type != pafs.FileType.File],
        skipped=skipped,
    )
    if not len(listing):
        what = f"no file matches {source}" if pattern else f"there are no image files in {source}"
        extensions = ", ".join(f".{kind}" for kind in sorted(SUPPORTED_TYPES))
        raise SourceError(f"Nothing to read: {what} (a folder is searched for {extensions}).")
    return listing


def _info(filesystem: pyarrow.fs.FileSystem, path: str, source: str) -> pyarrow.fs.FileInfo:
    try:
        return filesystem.get_file_info(path)
    except OSError as error:
        raise SourceError(f"Cannot list {source}: {error}") from None


def _split_glob(source: str) -> tuple[str, str | None]:
    """("photos", "**/*.jpg") for "photos/**/*.jpg": the folder before the first name with a glob
    character, and the pattern below it; (source, None) when there is no glob."""
    parts = source.split("/")
    for index, part in enumerate(parts):
        if _GLOB.search(part):
            return "/".join(parts[:index]) or ("/" if source.startswith("/") else "."), "/".join(parts[index:])
    return source, None


def _select(entries: list, root: str, pattern: str | None) -> tuple[list, int]:
    """The entries below `root` a folder or a pattern takes (not folders, not hidden), and how
    many files a folder left out for their extension."""
    import pyarrow.fs as pafs

    chosen, skipped = [], 0
    for info in entries:
        if info.type == pafs.FileType.Directory:
            continue
        parts = info.path[len(root) :].strip("/").split("/")
        if any(part.startswith(".") for part in parts):
            continue
        if pattern is not None:
            if _matches(parts, pattern.split("/")):
                chosen.append(info)
        elif looks_like_image(parts[-1]):
            chosen.append(info)
        else:
            skipped += 1
    return chosen, skipped


def _matches(parts: list[str], pattern: list[str]) -> bool:
    """Whether path `parts` match glob `pattern` parts; "**" matches any number of folders."""
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_matches(parts[index:], rest) for index in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], head) and _matches(parts[1:], rest)


# --- reading: the rows both engines feed core.batch.work.BatchWorker ------------------------------


def input_schema() -> pa.Schema:
    """The rows both engines feed a BatchWorker: a file's name, its bytes, or why it could not be read."""
    import pyarrow as pa

    return pa.schema([("file", pa.string()), ("bytes", pa.binary()), ("error", pa.string())])


def read_error(error: OSError) -> str:
    """One sentence for a file the filesystem would not give (the same words as `python -m core classify`)."""
    return f"Could not read the file: {error.strerror or error}."


def read_file(filesystem, path: str) -> tuple[bytes | None, str | None]:
    """(bytes, None), or (None, why) when `path` cannot be opened or read: raw bytes, never decompressed."""
    try:
        with filesystem.open_input_stream(path, compression=None) as stream:
            return stream.readall(), None
    except OSError as error:
        return None, read_error(error)
