"""The labelled images a person brings for transfer learning, checked and counted.

Ways in, as people already know them:

- a zip of class folders, the layout torchvision's ImageFolder reads (`cat/1.jpg`, `dog/2.png`), optionally
  inside one wrapping folder (`pets/cat/1.jpg`);
- per-class uploads, the way Teachable Machine asks for them (class name -> files);
- the same class folders on disk (the example dataset that ships in `assets/`, or a folder given to the CLI).

Every file that cannot be used is skipped and listed with a reason; nothing here crashes on a strange upload.
A zip is read entry by entry from memory (`zipfile.ZipFile(io.BytesIO(data))`): nothing is ever extracted or
written to disk, so there is no temporary folder to leak or clean up, and an entry's path is only ever a label.
Suspicious paths (zip slip), symlinks, oversized or over-compressed entries (zip bombs) are still skipped, and a
zip that is corrupt, encrypted, holds too many files or unpacks too large is refused as a whole.

Images are decoded once with `core.images.decode_image` to prove they are usable; only the encoded bytes are kept
(the trainer decodes them again, lazily).
"""

from __future__ import annotations

import hashlib
import io
import random
import re
import stat
import unicodedata
import zipfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from core.errors import ImageError, ZooScopeError
from core.images import decode_image
from core.progress import Progress

MIN_IMAGES_PER_CLASS = 2  # one to train on and one to validate
RECOMMENDED_IMAGES_PER_CLASS = 10
MAX_DUPLICATE_WARNINGS = 10

# Below this uncompressed size a high compression ratio is harmless (a solid-colour BMP compresses well).
_RATIO_MIN_BYTES = 1 << 20
_NOT_A_ZIP = "The upload is not a valid zip file."
_NOT_IN_FOLDER = "The file is not inside a class folder; put each image in a folder named after its class."
_DRIVE = re.compile(r"^[A-Za-z]:")
_WINDOWS_JUNK = {"thumbs.db", "desktop.ini", "ehthumbs.db"}


class DatasetError(ZooScopeError):
    """A dataset that cannot be used (or a zip refused as a whole); the message says what to change."""


@dataclass(frozen=True)
class LabelledImage:
    label: str  # class name
    name: str  # file name as shown to the person: the path inside the zip, or the upload name
    data: bytes = field(repr=False)  # encoded image bytes, decoded lazily by the trainer

    @cached_property
    def digest(self) -> str:
        """SHA-256 hex of the bytes: the cache key for features, and how duplicates are found."""
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str  # one readable sentence


@dataclass
class Dataset:
    classes: list[str] = field(default_factory=list)  # sorted like torchvision's ImageFolder (plain sorted())
    items: list[LabelledImage] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Images per class, in class order (0 for a class with none)."""
        per_class = Counter(item.label for item in self.items)
        return {name: per_class[name] for name in self.classes}

    def counts_frame(self) -> pd.DataFrame:
        counts = self.counts()
        return pd.DataFrame(
            {"class": list(counts), "images": pd.Series(list(counts.values()), dtype="int64")},
            columns=["class", "images"],
        )

    def validate(self) -> None:
        """Raise DatasetError unless there are 2+ classes and every class has 2+ images."""
        counts = self.counts()
        problems = []
        if not counts:
            raise DatasetError(
                "The dataset has no usable images; add at least 2 classes with "
                f"{MIN_IMAGES_PER_CLASS} or more images each."
            )
        if len(counts) < 2:
            only = next(iter(counts))
            problems.append(
                f"The dataset has only 1 class ('{only}'); training needs at least 2 classes, so add another."
            )
        few = [name for name, count in counts.items() if count < MIN_IMAGES_PER_CLASS]
        if few:
            detail = ", ".join(f"'{name}' has {_images(counts[name])}" for name in few)
            problems.append(
                f"Every class needs at least {MIN_IMAGES_PER_CLASS} images (one to train on, one to validate): "
                f"{detail}."
            )
        if problems:
            raise DatasetError(" ".join(problems))


@dataclass(frozen=True)
class ZipLimits:
    max_files: int = 5000  # files, not counting folder entries and macOS/Windows metadata
    max_total_bytes: int = 1 << 30  # uncompressed, as declared by the zip
    max_file_bytes: int = 50 << 20
    max_ratio: float = 200.0  # uncompressed / compressed size of one entry (zip bomb)


def dataset_from_zip(data: bytes, *, limits: ZipLimits = ZipLimits(), progress: Progress | None = None) -> Dataset:
    """Read an ImageFolder-style zip of class folders from memory; nothing is written to disk.

    Raises DatasetError when the zip is refused as a whole (corrupt, encrypted, too many files, too large);
    everything else that cannot be used is skipped and listed in `Dataset.skipped`.
    """
    if not data:
        raise DatasetError("The upload is empty; choose a zip file of class folders.")
    archive = _open_zip(data)
    with archive:
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
                skipped.append(Skipped(name, "This is a folder entry, not a file."))
            else:
                files.append((info, parts))

        if len(files) > limits.max_files:
            raise DatasetError(f"The zip holds {len(files):,} files; the limit is {limits.max_files:,}.")
        declared = sum(info.file_size for info, _ in files)
        if declared > limits.max_total_bytes:
            raise DatasetError(f"The zip unpacks to {_size(declared)}; the limit is {_size(limits.max_total_bytes)}.")

        # Folder entries count too: an empty 'dog/' beside 'cat/sub/1.jpg' means there is no wrapping folder.
        root = _wrapping_root([parts for _, parts in files] + [[*parts, ""] for parts in folders])
        seen_folders = {_class_name(parts[len(root)]) for parts in folders if _under(parts, root, len(root) + 1)}
        labelled: list[tuple[str, str, bytes]] = []
        total_read = 0
        for done, (info, parts) in enumerate(files, start=1):
            name = _entry_name(info)
            if progress is not None:
                progress(done - 1, len(files), f"Checking {name}")
            inner = parts[len(root) :] if _under(parts, root, len(root)) else parts
            if len(inner) < 2:
                skipped.append(Skipped(name, _NOT_IN_FOLDER))
                continue
            label = _class_name(inner[0])
            seen_folders.add(label)
            if not label:
                skipped.append(Skipped(name, "The class folder's name is blank; name it after its class."))
                continue
            content, reason = _read_entry(archive, info, limits)
            if content is None:
                skipped.append(Skipped(name, reason))
                continue
            total_read += len(content)
            if total_read > limits.max_total_bytes:  # only if the declared sizes lied; zipfile should prevent it
                raise DatasetError(f"The zip unpacks to more than {_size(limits.max_total_bytes)}, the limit.")
            reason = _image_problem(content)
            if reason:
                skipped.append(Skipped(name, reason))
                continue
            labelled.append((label, name, content))
        if progress is not None and files:
            progress(len(files), len(files), "Checked every file")

    skipped.sort(key=lambda entry: entry.name)  # folders' entries together, whatever the zip's order
    dataset = _assemble(labelled, skipped)
    ignored = sorted(folder for folder in seen_folders if folder and folder not in dataset.classes)
    dataset.warnings[:0] = [f"Folder '{folder}' has no usable images and was ignored." for folder in ignored]
    return dataset


def dataset_from_uploads(
    classes: Mapping[str, Sequence[tuple[str, bytes]]], *, progress: Progress | None = None
) -> Dataset:
    """Teachable-Machine style: class name -> the (file name, bytes) uploaded for it.

    Class names are stripped (and Unicode-normalised); names that end up equal are one class. A blank name
    raises DatasetError. Files that are not usable images are skipped and listed as `class/file name`.
    """
    merged: dict[str, list[tuple[str, bytes]]] = {}
    for raw_name, uploads in classes.items():
        label = _class_name(raw_name)
        if not label:
            raise DatasetError("Every class needs a name; one class has a blank name.")
        merged.setdefault(label, []).extend(uploads)

    total = sum(len(uploads) for uploads in merged.values())
    labelled: list[tuple[str, str, bytes]] = []
    skipped: list[Skipped] = []
    done = 0
    for label, uploads in merged.items():
        for name, content in uploads:
            if progress is not None:
                progress(done, total, f"Checking {name}")
            done += 1
            content = bytes(content)  # a bytearray or memoryview from an uploader is fine too
            reason = _image_problem(content)
            if reason:
                skipped.append(Skipped(f"{label}/{name}", reason))
            else:
                labelled.append((label, name, content))
    if progress is not None and total:
        progress(total, total, "Checked every file")

    dataset = _assemble(labelled, skipped)
    ignored = sorted(label for label in merged if label not in dataset.classes)
    dataset.warnings[:0] = [f"Class '{label}' has no usable images and was ignored." for label in ignored]
    return dataset


def dataset_from_folder(root: str | Path, *, progress: Progress | None = None) -> Dataset:
    """An ImageFolder-style folder on disk: every file under `root/<class>/` is an image of that class.

    Files beside the class folders (a README, a licence) belong to no class and are left out, as are
    hidden files and folders; a file that is not a usable image is skipped with its reason, as for uploads.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder of class folders.")
    classes: dict[str, list[tuple[str, bytes]]] = {}
    for folder in sorted(path for path in root.iterdir() if path.is_dir() and not path.name.startswith(".")):
        files = sorted(
            path
            for path in folder.rglob("*")
            if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)
        )
        classes[folder.name] = [(path.relative_to(folder).as_posix(), path.read_bytes()) for path in files]
    return dataset_from_uploads(classes, progress=progress)


def stratified_split(
    items: Sequence[LabelledImage], *, val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """(train, validation), split class by class; the same items and seed always give the same split.

    A class of n >= 2 images gives max(1, round(n * val_fraction)) to validation, but never all n; a class
    of one image goes to training. Each class is shuffled with its own seed, so adding a class (or reordering
    the items) leaves the other classes' splits as they were.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, not {val_fraction}")
    by_class: dict[str, list[LabelledImage]] = defaultdict(list)
    for item in items:
        by_class[item.label].append(item)
    train: list[LabelledImage] = []
    val: list[LabelledImage] = []
    for label in sorted(by_class):
        members = sorted(by_class[label], key=lambda item: (item.name, item.digest))
        random.Random(f"{seed}:{label}").shuffle(members)
        n = len(members)
        n_val = 0 if n < 2 else min(max(1, round(n * val_fraction)), n - 1)
        val.extend(members[:n_val])
        train.extend(members[n_val:])
    return train, val


def split_frame(train: Iterable[LabelledImage], val: Iterable[LabelledImage]) -> pd.DataFrame:
    """Images per class on each side of a split: columns class, train, validation, total."""
    n_train = Counter(item.label for item in train)
    n_val = Counter(item.label for item in val)
    names = sorted(set(n_train) | set(n_val))
    frame = pd.DataFrame(
        {
            "class": names,
            "train": pd.Series([n_train[name] for name in names], dtype="int64"),
            "validation": pd.Series([n_val[name] for name in names], dtype="int64"),
        },
        columns=["class", "train", "validation"],
    )
    frame["total"] = frame["train"] + frame["validation"]
    return frame


# -- building blocks ---------------------------------------------------------------------------------------


def _assemble(labelled: list[tuple[str, str, bytes]], skipped: list[Skipped]) -> Dataset:
    items = sorted((LabelledImage(label, name, content) for label, name, content in labelled), key=_order)
    dataset = Dataset(classes=sorted({item.label for item in items}), items=items, skipped=skipped)
    for label, count in dataset.counts().items():
        if count < RECOMMENDED_IMAGES_PER_CLASS:
            dataset.warnings.append(
                f"Class '{label}' has only {_images(count)}; "
                f"{RECOMMENDED_IMAGES_PER_CLASS} or more per class train a better model."
            )
    dataset.warnings.extend(_duplicate_warnings(items))
    return dataset


def _order(item: LabelledImage) -> tuple[str, str]:
    return item.label, item.name


def _duplicate_warnings(items: Sequence[LabelledImage]) -> list[str]:
    by_digest: dict[str, list[LabelledImage]] = defaultdict(list)
    for item in items:
        by_digest[item.digest].append(item)
    clashes = [group for group in by_digest.values() if len({item.label for item in group}) > 1]
    clashes.sort(key=lambda group: _order(group[0]))
    warnings = []
    for group in clashes[:MAX_DUPLICATE_WARNINGS]:
        where = ", ".join(f"'{item.name}' (class '{item.label}')" for item in group)
        warnings.append(f"The same image is in more than one class: {where}; this confuses training.")
    if len(clashes) > MAX_DUPLICATE_WARNINGS:
        more = len(clashes) - MAX_DUPLICATE_WARNINGS
        warnings.append(f"{more} more images are in more than one class; remove the copies from the wrong class.")
    return warnings


def _image_problem(content: bytes) -> str:
    """'' when the bytes decode to an image; otherwise the reason, one sentence."""
    try:
        decode_image(content)  # proves it is usable; the decoded pixels are dropped at once
    except ImageError as e:
        return str(e)
    return ""


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
        if not wrapped or not any(len(p) > depth + 2 for p in paths):
            break  # the files are not all in one folder, or that folder holds no class folders
        root.append(first)
    return root


def _under(parts: Sequence[str], root: Sequence[str], min_length: int) -> bool:
    return len(parts) >= min_length and list(parts[: len(root)]) == list(root)


def _read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limits: ZipLimits) -> tuple[bytes | None, str]:
    """(bytes, '') or (None, reason); reads at most max_file_bytes + 1 whatever the zip declares."""
    if info.file_size > limits.max_file_bytes:
        return None, f"The file is {_size(info.file_size)}; the limit is {_size(limits.max_file_bytes)} per file."
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
        return None, f"The file is larger than {_size(limits.max_file_bytes)}, the limit per file."
    if len(content) != info.file_size:
        return None, "The file's size does not match what the zip declares; the zip is damaged."
    return content, ""


def _class_name(raw: str) -> str:
    # NFC: macOS writes decomposed accents (NFD), so 'café' from a Mac and from Windows is one class.
    return unicodedata.normalize("NFC", raw).strip()


def _images(count: int) -> str:
    return f"{count} image" if count == 1 else f"{count} images"


def _size(n: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:,.1f}".removesuffix(".0") + f" {unit}"
    return f"{n:,} bytes"
