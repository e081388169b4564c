"""A zip of images read safely from memory: class folders as labels, nothing ever extracted.

An entry's path is only ever a label. Suspicious paths (zip slip), symlinks, oversized or over-compressed
entries (zip bombs) are skipped with a reason, and a zip that is corrupt, encrypted, holds too many files or
unpacks too large is refused as a whole. Fine-tune's labelled sets (core.datasets.labelled) and Features'
image sets (core.datasets.sources) both read zips through `open_zip`.
"""

from __future__ import annotations

import io
import re
import stat
import unicodedata
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field

from core.errors import ZooScopeError

_RATIO_MIN_BYTES = 1 << 20
_NOT_A_ZIP = "The upload is not a valid zip file."
FOLDER_ENTRY = "This is a folder entry, not a file."  # listed among the skipped entries; pages may leave it out
_DRIVE = re.compile(r"^[A-Za-z]:")
_WINDOWS_JUNK = {"thumbs.db", "desktop.ini", "ehthumbs.db"}


class DatasetError(ZooScopeError):
    """A dataset that cannot be used (or a zip refused as a whole); the message says what to change."""


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str  # one readable sentence


@dataclass(frozen=True)
class ZipLimits:
    max_files: int = 5000  # files, not counting folder entries and macOS/Windows metadata
    max_total_bytes: int = 1 << 30  # uncompressed, as declared by the zip
    max_file_bytes: int = 50 << 20
    max_ratio: float = 200.0  # uncompressed / compressed size of one entry (zip bomb)


@dataclass(frozen=True)
class ZipEntry:
    """A file in a zip worth opening: its path as the person wrote it, and its class folder."""

    name: str
    label: str | None  # the folder under any wrapping folder ('' when blank), None for a file outside every folder
    info: zipfile.ZipInfo = field(repr=False, compare=False)


DEFAULT_LIMITS = ZipLimits()


@dataclass
class ZipContents:
    """A zip checked as a whole (not corrupt, not encrypted, not too many files, not too large), its files
    labelled by class folder but not read yet, and what was skipped unread (with reasons).

    `read(entry)` reads one file, within the limits; nothing is ever extracted to disk. Close `archive`
    (or use this as a context manager) when done.
    """

    archive: zipfile.ZipFile
    entries: list[ZipEntry]
    skipped: list[Skipped]
    folders: set[str]  # every class folder seen, empty ones included
    limits: ZipLimits
    _read_bytes: int = 0

    def read(self, entry: ZipEntry) -> tuple[bytes | None, str]:
        """(bytes, '') or (None, reason); DatasetError if the zip turns out larger than its limit."""
        content, reason = _read_entry(self.archive, entry.info, self.limits)
        if content is not None:
            self._read_bytes += len(content)
            if self._read_bytes > self.limits.max_total_bytes:  # only if the declared sizes lied
                limit = readable_size(self.limits.max_total_bytes)
                raise DatasetError(f"The zip unpacks to more than {limit}, the limit.")
        return content, reason

    def __enter__(self) -> ZipContents:
        return self

    def __exit__(self, *exc: object) -> None:
        self.archive.close()


def open_zip(data: bytes, *, limits: ZipLimits = DEFAULT_LIMITS) -> ZipContents:
    """An ImageFolder-style zip, read from memory: each file with its class folder, none read yet.

    Raises DatasetError when the zip is refused as a whole (empty, corrupt, encrypted, too many files,
    too large); entries that cannot be used (unsafe paths, links, metadata, folders) are in `skipped`.
    """
    if not data:
        raise DatasetError("The upload is empty; choose a zip file of class folders.")
    archive = _open_zip(data)
    try:
        infos = archive.infolist()
        if any(info.flag_bits & 0x1 for info in infos):
            raise DatasetError("The zip is password-protected; zip the folders again without a password.")

        skipped: list[Skipped] = []
        files: list[tuple[zipfile.ZipInfo, list[str]]] = []  # entries worth opening, with their path parts
        folders: list[list[str]] = []  # folder entries, for the "empty folder" warning
        for info in infos:
            name = _entry_name(info)
            parts, reason = _classify(info, name)
            if parts is None:
                skipped.append(Skipped(name, reason))
            elif info.is_dir():
                folders.append(parts)
                skipped.append(Skipped(name, FOLDER_ENTRY))
            else:
                files.append((info, parts))

        if len(files) > limits.max_files:
            raise DatasetError(f"The zip holds {len(files):,} files; the limit is {limits.max_files:,}.")
        declared = sum(info.file_size for info, _ in files)
        if declared > limits.max_total_bytes:
            limit = readable_size(limits.max_total_bytes)
            raise DatasetError(f"The zip unpacks to {readable_size(declared)}; the limit is {limit}.")
    except BaseException:
        archive.close()
        raise

    # Folder entries count too: an empty 'dog/' beside 'cat/sub/1.jpg' means there is no wrapping folder.
    root = _wrapping_root([parts for _, parts in files] + [[*parts, ""] for parts in folders])
    seen_folders = {class_name(parts[len(root)]) for parts in folders if _under(parts, root, len(root) + 1)}
    entries = []
    for info, parts in files:
        inner = parts[len(root) :] if _under(parts, root, len(root)) else parts
        label = class_name(inner[0]) if len(inner) >= 2 else None
        if label is not None:
            seen_folders.add(label)
        entries.append(ZipEntry(_entry_name(info), label, info))
    return ZipContents(archive, entries, skipped, seen_folders, limits)


def _open_zip(data: bytes) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except UnicodeDecodeError:
        # zipfile decodes names flagged as UTF-8 strictly while reading the directory.
        raise DatasetError(
            "The zip's file names are damaged (they claim to be UTF-8 but are not); zip the folders again."
        ) from None
    except Exception:  # noqa: BLE001 - BadZipFile, struct errors, OSError, ...: all mean "not a zip"
        raise DatasetError(_NOT_A_ZIP) from None


def _entry_name(info: zipfile.ZipInfo) -> str:
    """The entry's path as the person wrote it.

    Names without the UTF-8 flag are decoded by zipfile as cp437; macOS and many tools write UTF-8 without
    setting the flag, so such a name is re-read as UTF-8 when its bytes are valid UTF-8.
    """
    name = info.filename
    if not info.flag_bits & 0x800:
        try:
            name = name.encode("cp437").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass  # genuinely cp437 (or another legacy code page): keep zipfile's reading
    return name


def _classify(info: zipfile.ZipInfo, name: str) -> tuple[list[str] | None, str]:
    """(path parts, '') for an entry worth looking at, or (None, reason) for one to skip unread."""
    if "\x00" in info.orig_filename:
        return None, "The file name contains a null character; it was skipped for safety."
    path = name.replace("\\", "/")  # some Windows tools write backslashes; treat them as separators
    if path.startswith("/") or _DRIVE.match(path):
        return None, "The path is absolute (it points outside the zip's folders); it was skipped for safety."
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        return None, "The path climbs out of its folder with '..'; it was skipped for safety."
    if not parts:
        return None, "The entry has no name."
    if "__MACOSX" in parts:
        return None, "This is macOS metadata (__MACOSX), not an image."
    hidden = next((part for part in parts if part.startswith(".")), None)
    if hidden == ".DS_Store":
        return None, "This is a macOS settings file (.DS_Store), not an image."
    if hidden is not None and hidden.startswith("._"):
        return None, "This is a macOS resource file (its name starts with '._'), not an image."
    if hidden is not None:
        return None, "This is a hidden file or folder (its name starts with '.'), not an image."
    if parts[-1].lower() in _WINDOWS_JUNK:
        return None, f"This is Windows folder metadata ({parts[-1]}), not an image."
    if stat.S_ISLNK(info.external_attr >> 16):
        return None, "The entry is a symbolic link, not a file; it was skipped for safety."
    return parts, ""


def _wrapping_root(paths: Sequence[list[str]]) -> list[str]:
    """The chain of single folders that wraps every path (`pets/` in pets/cat/1.jpg), or [].

    A path's last part is the file; a folder wraps when every path goes through it and some path still has a
    class folder below it. Repeated, so `data/train/cat/1.jpg` (a common download layout) gives cat.
    """
    root: list[str] = []
    while paths:
        depth = len(root)
        first = paths[0][depth] if len(paths[0]) > depth + 1 else None
        wrapped = first is not None and all(len(p) > depth + 1 and p[depth] == first for p in paths)
        if first is None or not wrapped or not any(len(p) > depth + 2 for p in paths):
            break  # the files are not all in one folder, or that folder holds no class folders
        root.append(first)
    return root


def _under(parts: Sequence[str], root: Sequence[str], min_length: int) -> bool:
    return len(parts) >= min_length and list(parts[: len(root)]) == list(root)


def _read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limits: ZipLimits) -> tuple[bytes | None, str]:
    """(bytes, '') or (None, reason); reads at most max_file_bytes + 1 whatever the zip declares."""
    if info.file_size > limits.max_file_bytes:
        limit = readable_size(limits.max_file_bytes)
        return None, f"The file is {readable_size(info.file_size)}; the limit is {limit} per file."
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > _RATIO_MIN_BYTES and ratio > limits.max_ratio:
        return None, (
            f"The file is compressed {ratio:,.0f} times (the limit is {limits.max_ratio:,.0f}), "
            "as zip bombs are; it was skipped for safety."
        )
    if info.file_size == 0:
        return None, "The file is empty."
    try:
        with archive.open(info) as entry:
            content = entry.read(limits.max_file_bytes + 1)
    except NotImplementedError:
        return None, "The file uses a compression method this app cannot read; zip it again with standard settings."
    except Exception:  # noqa: BLE001 - bad CRC, truncated data, zlib errors: the entry is damaged
        return None, "The file is damaged inside the zip and could not be read."
    if len(content) > limits.max_file_bytes:
        return None, f"The file is larger than {readable_size(limits.max_file_bytes)}, the limit per file."
    if len(content) != info.file_size:
        return None, "The file's size does not match what the zip declares; the zip is damaged."
    return content, ""


def class_name(raw: str) -> str:
    # NFC: macOS writes decomposed accents (NFD), so 'café' from a Mac and from Windows is one class.
    return unicodedata.normalize("NFC", raw).strip()


def readable_size(n: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:,.1f}".removesuffix(".0") + f" {unit}"
    return f"{n:,} bytes"
