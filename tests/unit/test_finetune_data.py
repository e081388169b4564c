"""core.datasets.labelled against zips built in memory: layouts, junk, zip slip, bombs, names, splits."""

from __future__ import annotations

import hashlib
import io
import struct
import tempfile
import unicodedata
import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage import data as skdata

from core.datasets.labelled import (
    Dataset,
    DatasetError,
    LabelledImage,
    Skipped,
    dataset_from_uploads,
    dataset_from_zip,
    split_frame,
    stratified_split,
)

# -- builders ---------------------------------------------------------------------------------------------


def colour(i: int) -> tuple[int, int, int]:
    return (i * 37 % 256, i * 91 % 256, i * 53 % 256)  # distinct for i in 0..255: no accidental duplicates


def png(i: int = 0, size: tuple[int, int] = (8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour(i)).save(buf, "PNG")
    return buf.getvalue()


def jpeg(i: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour(i)).save(buf, "JPEG")
    return buf.getvalue()


def make_zip(entries, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """entries: (name or ZipInfo, bytes) pairs, or a dict; a name ending in '/' is a folder entry."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, content in entries.items() if isinstance(entries, dict) else entries:
            if isinstance(name, str) and name.endswith("/"):
                zf.writestr(zipfile.ZipInfo(name), b"")
            else:
                zf.writestr(name, content)
    return buf.getvalue()


def image_folder(classes: dict[str, int], root: str = "", start: int = 0) -> dict[str, bytes]:
    """{root}{class}/{i}.png entries with distinct images."""
    entries, i = {}, start
    for label, count in classes.items():
        for _ in range(count):
            entries[f"{root}{label}/{i}.png"] = png(i)
            i += 1
    return entries


def patch_central(data: bytes, name: bytes, *, flags: int | None = None, file_size: int | None = None) -> bytes:
    """Rewrite fields of the central-directory record for `name`, the way a crafted zip would."""
    out = bytearray(data)
    at = out.find(b"PK\x01\x02")
    while at >= 0:
        name_len = struct.unpack_from("<H", out, at + 28)[0]
        if bytes(out[at + 46 : at + 46 + name_len]) == name:
            if flags is not None:
                struct.pack_into("<H", out, at + 8, flags)
            if file_size is not None:
                struct.pack_into("<I", out, at + 24, file_size)
            return bytes(out)
        at = out.find(b"PK\x01\x02", at + 4)
    raise AssertionError(f"no central record for {name!r}")


def reasons(dataset: Dataset) -> dict[str, str]:
    return {entry.name: entry.reason for entry in dataset.skipped}


@pytest.fixture(autouse=True)
def no_extraction(monkeypatch: pytest.MonkeyPatch):
    """Reading a zip never extracts it or makes a temporary file or folder."""

    def refuse(*args, **kwargs):
        raise AssertionError("core.datasets.labelled must not touch the disk")

    for owner, name in [
        (zipfile.ZipFile, "extract"),
        (zipfile.ZipFile, "extractall"),
        (tempfile, "mkstemp"),
        (tempfile, "mkdtemp"),
        (tempfile, "NamedTemporaryFile"),
        (tempfile, "TemporaryFile"),
        (tempfile, "SpooledTemporaryFile"),
        (tempfile, "TemporaryDirectory"),
    ]:
        monkeypatch.setattr(owner, name, refuse)


# -- ImageFolder zips -------------------------------------------------------------------------------------


@pytest.mark.parametrize("root", ["", "pets/"], ids=["no-root", "wrapping-root"])
def test_image_folder_zip_with_junk(root: str):
    entries = {f"{root}": b"", f"{root}cat/": b"", f"{root}dog/": b""} if root else {"cat/": b"", "dog/": b""}
    entries |= image_folder({"cat": 12}, root)
    entries |= {f"{root}dog/{i}.jpg": jpeg(100 + i) for i in range(11)}
    entries |= {
        f"__MACOSX/{root}cat/._0.png": b"\x00\x05\x16\x07 resource fork",
        "__MACOSX/": b"",
        f"{root}cat/.DS_Store": b"\x00\x00\x00\x01Bud1",
        f"{root}dog/Thumbs.db": b"\xd0\xcf\x11\xe0",
        f"{root}dog/notes.txt": b"these are my dogs\n",
        f"{root}dog/empty.png": b"",
        f"{root}readme.png": png(250),
    }
    dataset = dataset_from_zip(make_zip(entries))

    assert dataset.classes == ["cat", "dog"]
    assert dataset.counts() == {"cat": 12, "dog": 11}
    assert dataset.warnings == []
    dataset.validate()
    images = {n for n in entries if n.endswith((".png", ".jpg")) and not n.startswith("__MACOSX")}
    assert {item.name for item in dataset.items} == images - {f"{root}dog/empty.png", f"{root}readme.png"}
    by_name = {item.name: item for item in dataset.items}
    assert by_name[f"{root}dog/3.jpg"].data == entries[f"{root}dog/3.jpg"]  # the bytes, untouched
    assert by_name[f"{root}dog/3.jpg"].label == "dog"

    why = reasons(dataset)
    assert "macOS metadata" in why[f"__MACOSX/{root}cat/._0.png"]
    assert ".DS_Store" in why[f"{root}cat/.DS_Store"]
    assert "Thumbs.db" in why[f"{root}dog/Thumbs.db"]
    assert "text" in why[f"{root}dog/notes.txt"]
    assert why[f"{root}dog/empty.png"] == "The file is empty."
    assert "class folder" in why[f"{root}readme.png"]
    assert "folder entry" in why[f"{root}cat/"]
    assert all(isinstance(s, Skipped) and s.reason.endswith(".") for s in dataset.skipped)
    assert set(why) == set(entries) - set(by_name)  # every entry is either an item or listed with a reason


def test_counts_frame_and_digest():
    dataset = dataset_from_zip(make_zip(image_folder({"b": 3, "a": 2})))
    frame = dataset.counts_frame()
    assert list(frame.columns) == ["class", "images"]
    assert frame.to_dict("records") == [{"class": "a", "images": 2}, {"class": "b", "images": 3}]
    item = dataset.items[0]
    assert item.digest == hashlib.sha256(item.data).hexdigest()
    assert "data" not in repr(item)  # a dataset's repr never dumps megabytes of bytes
    assert list(Dataset().counts_frame().columns) == ["class", "images"]


def test_nested_folders_use_the_first_level_as_the_class():
    entries = {"cat/indoor/1.png": png(1), "cat/outdoor/2.png": png(2), "dog/3.png": png(3), "dog/a/b/4.png": png(4)}
    assert dataset_from_zip(make_zip(entries)).counts() == {"cat": 2, "dog": 2}


def test_an_empty_sibling_folder_means_no_wrapping_folder():
    entries = {"cat/indoor/1.png": png(1), "cat/indoor/2.png": png(2), "dog/": b""}
    dataset = dataset_from_zip(make_zip(entries))
    assert dataset.counts() == {"cat": 2}
    assert dataset.warnings[0] == "Folder 'dog' has no usable images and was ignored."


def test_chain_of_wrapping_folders_is_unwrapped():
    # Kaggle-style downloads: data/train/<class>/<image>.
    entries = image_folder({"cat": 2, "dog": 2}, "data/train/")
    dataset = dataset_from_zip(make_zip(entries))
    assert dataset.counts() == {"cat": 2, "dog": 2}
    assert dataset.items[0].name == "data/train/cat/0.png"


def test_backslash_separators_from_old_windows_tools():
    entries = {"cat\\1.png": png(1), "cat\\2.png": png(2), "dog\\3.png": png(3), "dog\\4.png": png(4)}
    assert dataset_from_zip(make_zip(entries)).counts() == {"cat": 2, "dog": 2}


def test_real_faces_from_skimage():
    faces = skdata.lfw_subset()  # 200 grayscale 25x25 floats: 100 faces, then 100 non-faces
    entries = {}
    for i, array in enumerate(faces):
        buf = io.BytesIO()
        Image.fromarray(np.round(array * 255).astype(np.uint8), "L").save(buf, "PNG")
        entries[f"{'face' if i < 100 else 'not_face'}/{i:03d}.png"] = buf.getvalue()

    dataset = dataset_from_zip(make_zip(entries))

    assert dataset.classes == ["face", "not_face"]
    assert dataset.counts() == {"face": 100, "not_face": 100}
    assert dataset.skipped == []
    dataset.validate()
    train, val = stratified_split(dataset.items)
    assert split_frame(train, val).to_dict("records") == [
        {"class": "face", "train": 80, "validation": 20, "total": 100},
        {"class": "not_face", "train": 80, "validation": 20, "total": 100},
    ]


# -- names ------------------------------------------------------------------------------------------------


def with_raw_name(placeholder: str, raw: bytes, **patch) -> bytes:
    """A zip whose entry `placeholder` is renamed to the raw bytes `raw` (same length) in both headers."""
    assert len(placeholder.encode()) == len(raw)
    entries = image_folder({"dog": 2}) | {placeholder: png(60), placeholder.replace("1", "2"): png(61)}
    data = make_zip(entries).replace(placeholder.encode(), raw)
    data = data.replace(placeholder.replace("1", "2").encode(), raw.replace(b"1", b"2"))
    for name in (raw, raw.replace(b"1", b"2")):
        data = patch_central(data, name, **patch) if patch else data
    return data


@pytest.mark.parametrize(
    ("raw", "label"),
    [
        (b"caf\x82/1.png", "café"),  # cp437, as old Windows tools write
        (b"caf\xc3\xa9/1.png", "café"),  # UTF-8 without the UTF-8 flag, as macOS writes
        (b"caf\xe9/1.png", "cafΘ"),  # latin-1: not recoverable, but no crash and still one class
    ],
    ids=["cp437", "utf8-unflagged", "latin1"],
)
def test_non_utf8_names(raw: bytes, label: str):
    placeholder = "X" * (len(raw) - len(b"/1.png")) + "/1.png"
    dataset = dataset_from_zip(with_raw_name(placeholder, raw))
    assert dataset.classes == sorted([label, "dog"])
    assert dataset.counts()[label] == 2


def test_nfd_and_nfc_folder_names_are_one_class():
    nfd, nfc = unicodedata.normalize("NFD", "café"), unicodedata.normalize("NFC", "café")
    entries = {f"{nfd}/1.png": png(1), f"{nfc}/2.png": png(2), "dog/3.png": png(3), "dog/4.png": png(4)}
    assert dataset_from_zip(make_zip(entries)).counts() == {"café": 2, "dog": 2}


def test_names_falsely_flagged_utf8_refuse_readably():
    # zipfile itself cannot list such a zip; the person gets a sentence, not a UnicodeDecodeError.
    entries = image_folder({"dog": 2}) | {"café/1.png": png(1)}
    data = make_zip(entries).replace("café".encode(), b"caf\xff\xa9")
    with pytest.raises(DatasetError, match="names are damaged"):
        dataset_from_zip(data)


def test_class_names_are_stripped():
    entries = {" cat /1.png": png(1), "cat/2.png": png(2), "dog/3.png": png(3), "dog /4.png": png(4)}
    assert dataset_from_zip(make_zip(entries)).counts() == {"cat": 2, "dog": 2}


# -- warnings and validation ------------------------------------------------------------------------------


def test_empty_class_folder_warns_and_is_not_a_class():
    entries = {"bird/": b"", "fish/notes.txt": b"no fish yet\n"} | image_folder({"cat": 10, "dog": 10})
    dataset = dataset_from_zip(make_zip(entries))
    assert dataset.classes == ["cat", "dog"]
    assert dataset.warnings == [
        "Folder 'bird' has no usable images and was ignored.",
        "Folder 'fish' has no usable images and was ignored.",
    ]


def test_few_images_warn():
    dataset = dataset_from_zip(make_zip(image_folder({"cat": 4, "dog": 10})))
    assert dataset.warnings == ["Class 'cat' has only 4 images; 10 or more per class train a better model."]
    dataset.validate()


def test_single_class_fails_validation():
    dataset = dataset_from_zip(make_zip(image_folder({"cat": 12})))
    assert dataset.classes == ["cat"]
    with pytest.raises(DatasetError, match=r"only 1 class \('cat'\); training needs at least 2 classes"):
        dataset.validate()


def test_class_with_one_image_fails_validation():
    dataset = dataset_from_zip(make_zip(image_folder({"cat": 3, "dog": 1, "emu": 1})))
    assert "Class 'dog' has only 1 image;" in dataset.warnings[1]
    with pytest.raises(DatasetError) as caught:
        dataset.validate()
    assert str(caught.value) == (
        "Every class needs at least 2 images (one to train on, one to validate): 'dog' has 1 image, 'emu' has 1 image."
    )


def test_empty_dataset_fails_validation():
    dataset = dataset_from_zip(make_zip({"notes.txt": b"hello", "cat/x.txt": b"hello"}))
    assert dataset.classes == [] and len(dataset.skipped) == 2
    with pytest.raises(DatasetError, match="no usable images"):
        dataset.validate()


def test_duplicates_across_classes_warn_and_are_kept():
    entries = image_folder({"cat": 10, "dog": 10}) | {"dog/copy.png": png(0)}  # png(0) is cat/0.png
    dataset = dataset_from_zip(make_zip(entries))
    assert dataset.counts() == {"cat": 10, "dog": 11}
    (warning,) = dataset.warnings
    assert "'cat/0.png' (class 'cat')" in warning and "'dog/copy.png' (class 'dog')" in warning


def test_progress_reports_every_file():
    calls = []
    dataset_from_zip(make_zip(image_folder({"cat": 2, "dog": 2})), progress=lambda *a: calls.append(a))
    assert [done for done, _, _ in calls] == [0, 1, 2, 3, 4]
    assert {total for _, total, _ in calls} == {4}


# -- per-class uploads ------------------------------------------------------------------------------------


def test_uploads_happy_path():
    dataset = dataset_from_uploads(
        {"Dog": [(f"d{i}.jpg", jpeg(i)) for i in range(12)], "Cat": [(f"c{i}.png", png(50 + i)) for i in range(12)]}
    )
    assert dataset.classes == ["Cat", "Dog"]
    assert dataset.counts() == {"Cat": 12, "Dog": 12}
    assert dataset.skipped == [] and dataset.warnings == []
    assert dataset.items[0] == LabelledImage("Cat", "c0.png", png(50))
    dataset.validate()


def test_uploads_skip_bad_images_and_merge_names():
    dataset = dataset_from_uploads(
        {
            "cat": [("a.png", png(1)), ("notes.txt", b"just text\n")],
            " cat ": [("b.png", png(2)), ("empty.jpg", b"")],
            "dog": [("c.png", bytearray(png(3))), ("broken.png", png(4)[:40])],
            "owl": [],
        }
    )
    assert dataset.counts() == {"cat": 2, "dog": 1}
    assert reasons(dataset) == {
        "cat/notes.txt": "The file looks like a text/HTML file, not an image.",
        "cat/empty.jpg": "The file is empty.",
        "dog/broken.png": "The image data is truncated or corrupt.",
    }
    assert dataset.warnings[0] == "Class 'owl' has no usable images and was ignored."
    assert isinstance(dataset.items[-1].data, bytes)
    with pytest.raises(DatasetError, match="'dog' has 1 image"):
        dataset.validate()


@pytest.mark.parametrize("name", ["", "   "])
def test_uploads_reject_blank_class_names(name: str):
    with pytest.raises(DatasetError, match="blank name"):
        dataset_from_uploads({"cat": [("a.png", png(1))], name: [("b.png", png(2))]})


# -- splits -----------------------------------------------------------------------------------------------


def fake_items(counts: dict[str, int]) -> list[LabelledImage]:
    return [LabelledImage(label, f"{i}.png", f"{label}{i}".encode()) for label, n in counts.items() for i in range(n)]


def test_split_sizes_and_stratification():
    train, val = stratified_split(fake_items({"a": 100, "b": 100}), val_fraction=0.2, seed=0)
    frame = split_frame(train, val)
    assert list(frame.columns) == ["class", "train", "validation", "total"]
    assert frame.to_dict("records") == [
        {"class": "a", "train": 80, "validation": 20, "total": 100},
        {"class": "b", "train": 80, "validation": 20, "total": 100},
    ]
    assert not {item.digest for item in train} & {item.digest for item in val}


@pytest.mark.parametrize(
    ("n", "fraction", "n_val"),
    [(1, 0.2, 0), (2, 0.2, 1), (3, 0.2, 1), (2, 0.99, 1), (5, 0.9, 4), (10, 0.5, 5), (7, 0.01, 1)],
)
def test_split_counts_per_class(n: int, fraction: float, n_val: int):
    train, val = stratified_split(fake_items({"a": n}), val_fraction=fraction)
    assert (len(train), len(val)) == (n - n_val, n_val)


def test_split_is_deterministic_per_seed():
    items = fake_items({"a": 30, "b": 7, "c": 2})
    first = stratified_split(items, seed=3)
    assert stratified_split(items, seed=3) == first
    assert stratified_split(list(reversed(items)), seed=3) == first  # the order items arrive in does not matter
    assert stratified_split(items, seed=4) != first
    train, val = first
    assert {item.label for item in val} == {item.label for item in train} == {"a", "b", "c"}
    # Adding a class leaves the other classes' splits alone.
    more_train, more_val = stratified_split(fake_items({"0": 9}) + items, seed=3)  # "0" sorts first
    assert [item for item in more_val if item.label != "0"] == val


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_rejects_bad_fractions(fraction: float):
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split(fake_items({"a": 4}), val_fraction=fraction)


def test_split_frame_of_nothing():
    frame = split_frame([], [])
    assert list(frame.columns) == ["class", "train", "validation", "total"] and frame.empty
    assert isinstance(frame, pd.DataFrame)
