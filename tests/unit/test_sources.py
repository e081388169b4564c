"""core.datasets.sources: uploads, files, folders and zips as named, labelled images read only when needed."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from core.datasets.labelled import DatasetError
from core.datasets.sources import NOT_AN_IMAGE_NAME, SourceError, from_paths, from_uploads, from_zip, looks_like_image
from tests.faces import png


def tiny_png(value: int = 0) -> bytes:
    import numpy as np

    return png(np.full((4, 4), value, np.uint8))


def make_zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_uploads_are_tried_whatever_their_names():
    found = from_uploads([("a.jpg", b"1"), ("notes.txt", b"2")])
    assert [(s.name, s.label, s.read()) for s in found.images] == [("a.jpg", None, b"1"), ("notes.txt", None, b"2")]
    assert not found.skipped and not found.labelled


def test_a_zip_of_class_folders_gives_labels_and_reads_lazily():
    data = make_zip(
        {
            "pets/cat/1.png": tiny_png(1),
            "pets/dog/2.PNG": tiny_png(2),
            "pets/dog/notes.txt": b"hello",
            "pets/__MACOSX/._1.png": b"junk",
            "../evil.png": tiny_png(3),
        }
    )
    found = from_zip(data, prefix="data.zip/")
    assert [(s.name, s.label) for s in found.images] == [
        ("data.zip/pets/cat/1.png", "cat"),
        ("data.zip/pets/dog/2.PNG", "dog"),
    ]
    assert found.images[1].read() == tiny_png(2)
    reasons = {s.name: s.reason for s in found.skipped}
    assert reasons["data.zip/pets/dog/notes.txt"] == NOT_AN_IMAGE_NAME
    assert "macOS" in reasons["data.zip/pets/__MACOSX/._1.png"] and "'..'" in reasons["data.zip/../evil.png"]
    assert found.labelled


def test_a_zip_of_loose_images_has_no_labels():
    found = from_zip(make_zip({"a.png": tiny_png(1), "b.png": tiny_png(2)}))
    assert [(s.name, s.label) for s in found.images] == [("a.png", None), ("b.png", None)]


def test_a_refused_zip_says_why():
    with pytest.raises(DatasetError, match="not a valid zip"):
        from_zip(b"PK\x03\x04 broken")


def test_folders_files_and_zips_on_the_command_line(tmp_path: Path):
    (tmp_path / "set" / "cat").mkdir(parents=True)
    (tmp_path / "set" / "cat" / "1.png").write_bytes(tiny_png(1))
    (tmp_path / "set" / "loose.png").write_bytes(tiny_png(2))
    (tmp_path / "set" / "README.md").write_text("about")
    (tmp_path / "set" / ".hidden.png").write_bytes(tiny_png(3))
    (tmp_path / "photo.jpg").write_bytes(b"not really")
    (tmp_path / "more.zip").write_bytes(make_zip({"dog/2.png": tiny_png(4)}))
    found = from_paths([str(tmp_path / "set"), str(tmp_path / "photo.jpg"), str(tmp_path / "more.zip")])
    assert [(Path(s.name).relative_to(tmp_path).as_posix(), s.label) for s in found.images] == [
        ("set/cat/1.png", "cat"),
        ("set/loose.png", None),
        ("photo.jpg", None),  # named on its own: tried (and refused when decoded)
        ("more.zip/dog/2.png", "dog"),
    ]
    assert [(Path(s.name).name, s.reason) for s in found.skipped] == [("README.md", NOT_AN_IMAGE_NAME)]


def test_files_are_read_only_when_asked(tmp_path: Path):
    path = tmp_path / "1.png"
    path.write_bytes(tiny_png(1))
    (found,) = from_paths([str(path)]).images
    path.write_bytes(tiny_png(9))  # changed after listing: the new bytes are what is read
    assert found.read() == tiny_png(9)
    path.unlink()
    with pytest.raises(OSError):
        found.read()


def test_a_missing_path_is_an_error_that_names_it(tmp_path: Path):
    with pytest.raises(SourceError, match="nowhere.jpg does not exist"):
        from_paths([str(tmp_path / "nowhere.jpg")])


@pytest.mark.parametrize(
    ("name", "image"), [("a.JPG", True), ("b.tiff", True), ("c.webp", True), ("d.txt", False), ("jpg", False)]
)
def test_image_names(name: str, image: bool):
    assert looks_like_image(name) is image
