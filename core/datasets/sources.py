"""Where a set of images comes from: uploads, files, folders, zips; each image with its class when known.

An `ImageSource` is a name, a label (the class folder it sits in, or None) and a way to read its bytes.
Files on disk and zip entries are read only when their batch is embedded, so a folder of thousands
of photos never sits in memory at once; uploads are already in memory.

Folders and zips contribute the files whose names say they are images (the extensions Classify
accepts), as torchvision's ImageFolder does: a README or a licence beside the photos is listed as
skipped, with its reason, and the rest go through. A file named on its own is always tried: if it is
not an image, decoding says so. A zip is opened with the same checks as Fine-tune's
(core.datasets.labelled.open_zip: zip slip, bombs, encryption, size limits), and nothing is extracted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core.datasets.zips import FOLDER_ENTRY, Skipped, ZipContents, ZipEntry, ZipLimits, open_zip
from core.errors import ZooScopeError
from core.images import SUPPORTED_TYPES

NOT_AN_IMAGE_NAME = "Its name does not end in an image type ({types}), so it was left out.".format(
    types=", ".join(f".{extension}" for extension in SUPPORTED_TYPES)
)


class SourceError(ZooScopeError):
    """A source that cannot be read at all (a path that does not exist); the message names it."""


@dataclass(frozen=True)
class ImageSource:
    name: str  # as shown to the person: the upload's name, the path, or the path inside the zip
    label: str | None  # the class folder, or None
    read: Callable[[], bytes] = field(repr=False, compare=False)  # the encoded bytes; OSError if unreadable


@dataclass
class SourceSet:
    """Every image found, in order, and every file left out with its reason."""

    images: list[ImageSource] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def extend(self, other: SourceSet) -> None:
        self.images.extend(other.images)
        self.skipped.extend(other.skipped)

    @property
    def labelled(self) -> bool:
        return any(image.label is not None for image in self.images)


def looks_like_image(name: str) -> bool:
    return name.rsplit(".", 1)[-1].lower() in SUPPORTED_TYPES if "." in name else False


def _constant(data: bytes) -> Callable[[], bytes]:
    return lambda: data


def from_uploads(files: Iterable[tuple[str, bytes]]) -> SourceSet:
    """(name, bytes) pairs as a page's uploader gives them: every one is tried, none has a label."""
    return SourceSet(images=[ImageSource(name, None, _constant(bytes(data))) for name, data in files])


def from_zip(data: bytes, *, prefix: str = "", limits: ZipLimits | None = None) -> SourceSet:
    """The images in a zip, each labelled by its class folder (None beside the folders), read lazily.

    `prefix` goes before every entry's name (the zip's own path, for the command line). DatasetError
    (a ZooScopeError) if the zip is refused as a whole.
    """
    contents = open_zip(data, limits=limits or ZipLimits())  # holds only the zip's bytes, which the caller has
    found = SourceSet(
        skipped=[
            Skipped(prefix + entry.name, entry.reason) for entry in contents.skipped if entry.reason != FOLDER_ENTRY
        ]
    )
    for entry in contents.entries:
        name = prefix + entry.name
        if not looks_like_image(entry.name):
            found.skipped.append(Skipped(name, NOT_AN_IMAGE_NAME))
            continue
        found.images.append(ImageSource(name, entry.label or None, _zip_reader(contents, entry)))
    return found


def _zip_reader(contents: ZipContents, entry: ZipEntry) -> Callable[[], bytes]:
    def read() -> bytes:
        content, reason = contents.read(entry)
        if content is None:
            raise OSError(reason)
        return content

    return read


def from_folder(root: Path, *, prefix: str | None = None) -> SourceSet:
    """The image files under `root` (hidden files and folders left out), sorted; a file inside a
    subfolder is labelled by that first-level subfolder, like ImageFolder's classes."""
    shown = str(root) if prefix is None else prefix
    found = SourceSet()
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if not path.is_file() or any(part.startswith(".") for part in relative.parts):
            continue
        name = f"{shown}/{relative.as_posix()}"
        if not looks_like_image(path.name):
            found.skipped.append(Skipped(name, NOT_AN_IMAGE_NAME))
            continue
        label = relative.parts[0] if len(relative.parts) > 1 else None
        found.images.append(ImageSource(name, label, path.read_bytes))
    return found


def from_paths(paths: Sequence[str | Path]) -> SourceSet:
    """The command line's SOURCE...: image files, folders (of class folders or not), zips.

    SourceError for a path that does not exist; a file that exists but cannot be read becomes a row
    with its error when it is embedded.
    """
    found = SourceSet()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(from_folder(path, prefix=str(raw).rstrip("/") or "/"))
        elif path.suffix.lower() == ".zip" and path.is_file():
            try:
                data = path.read_bytes()
            except OSError as error:
                raise SourceError(f"Could not read {raw}: {error.strerror or error}.") from error
            found.extend(from_zip(data, prefix=f"{raw}/"))
        elif path.exists() or path.is_symlink():
            found.images.append(ImageSource(str(raw), None, path.read_bytes))
        else:
            raise SourceError(f"{raw} does not exist.")
    return found
