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
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from core.datasets.zips import (
    DEFAULT_LIMITS,
    DatasetError,
    Skipped,
    ZipLimits,
    class_name,
    open_zip,
)
from core.errors import ImageError
from core.images import decode_image
from core.progress import Progress

MIN_IMAGES_PER_CLASS = 2  # one to train on and one to validate
RECOMMENDED_IMAGES_PER_CLASS = 10
MAX_DUPLICATE_WARNINGS = 10

# Below this uncompressed size a high compression ratio is harmless (a solid-colour BMP compresses well).
_NOT_IN_FOLDER = "The file is not inside a class folder; put each image in a folder named after its class."


@dataclass(frozen=True)
class LabelledImage:
    label: str  # class name
    name: str  # file name as shown to the person: the path inside the zip, or the upload name
    data: bytes = field(repr=False)  # encoded image bytes, decoded lazily by the trainer

    @cached_property
    def digest(self) -> str:
        """SHA-256 hex of the bytes: the cache key for features, and how duplicates are found."""
        return hashlib.sha256(self.data).hexdigest()


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


def dataset_from_zip(data: bytes, *, limits: ZipLimits = DEFAULT_LIMITS, progress: Progress | None = None) -> Dataset:
    """Read an ImageFolder-style zip of class folders from memory; nothing is written to disk.

    Raises DatasetError when the zip is refused as a whole (corrupt, encrypted, too many files, too large);
    everything else that cannot be used is skipped and listed in `Dataset.skipped`.
    """
    with open_zip(data, limits=limits) as contents:
        skipped = list(contents.skipped)
        labelled: list[tuple[str, str, bytes]] = []
        total = len(contents.entries)
        for done, entry in enumerate(contents.entries, start=1):
            if progress is not None:
                progress(done - 1, total, f"Checking {entry.name}")
            if entry.label is None:
                skipped.append(Skipped(entry.name, _NOT_IN_FOLDER))
                continue
            if not entry.label:
                skipped.append(Skipped(entry.name, "The class folder's name is blank; name it after its class."))
                continue
            content, reason = contents.read(entry)
            if content is None:
                skipped.append(Skipped(entry.name, reason))
                continue
            reason = _image_problem(content)
            if reason:
                skipped.append(Skipped(entry.name, reason))
                continue
            labelled.append((entry.label, entry.name, content))
        if progress is not None and total:
            progress(total, total, "Checked every file")

    skipped.sort(key=lambda entry: entry.name)  # folders' entries together, whatever the zip's order
    dataset = _assemble(labelled, skipped)
    ignored = sorted(folder for folder in contents.folders if folder and folder not in dataset.classes)
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
        label = class_name(raw_name)
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


def _images(count: int) -> str:
    return f"{count} image" if count == 1 else f"{count} images"
