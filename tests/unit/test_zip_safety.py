"""core.datasets.labelled reads zips safely: zip slip, links, bombs, lying sizes, encryption; nothing written."""

from __future__ import annotations

import builtins
import contextlib
import io
import os
import stat
import time
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from core.datasets.labelled import (
    DatasetError,
    ZipLimits,
    dataset_from_zip,
)
from core.errors import ZooScopeError
from tests.unit.test_finetune_data import (  # noqa: F401 - the builders, and the guard that nothing touches the disk
    image_folder,
    jpeg,
    make_zip,
    no_extraction,
    patch_central,
    png,
    reasons,
)

# -- safety -----------------------------------------------------------------------------------------------


def files_under(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*")}


@contextlib.contextmanager
def forbid_writes():
    """Any attempt to open a file for writing inside the block fails the test."""
    real_open, real_os_open = builtins.open, os.open

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(flag in mode for flag in "wax+"):
            raise AssertionError(f"wrote {file}")
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise AssertionError(f"wrote {path}")
        return real_os_open(path, flags, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(builtins, "open", guarded_open)
        patch.setattr(os, "open", guarded_os_open)
        yield


def test_zip_slip_entries_are_skipped_and_nothing_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    work = tmp_path / "cwd" / "deeper"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    evil = ["../evil.png", "/abs/evil.png", "a/../../evil.png", "C:\\evil.png", "..\\evil.png", "\\\\host\\evil.png"]
    entries = [(zipfile.ZipInfo(name), png(7)) for name in evil] + list(image_folder({"cat": 2, "dog": 2}).items())
    data = make_zip(entries)
    before = files_under(tmp_path)

    with forbid_writes():
        dataset = dataset_from_zip(data)

    assert files_under(tmp_path) == before
    assert not Path("/abs").exists()
    assert not (Path(__file__).parents[2] / "evil.png").exists()
    assert dataset.counts() == {"cat": 2, "dog": 2}
    why = reasons(dataset)
    assert set(evil) <= set(why)
    for name in evil:
        assert "skipped for safety" in why[name], name


def test_symlink_entry_is_skipped():
    link = zipfile.ZipInfo("cat/link.png")
    link.create_system = 3  # Unix
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    entries = [(link, b"/etc/passwd")] + list(image_folder({"cat": 2, "dog": 2}).items())
    dataset = dataset_from_zip(make_zip(entries))
    assert dataset.counts() == {"cat": 2, "dog": 2}
    assert "symbolic link" in reasons(dataset)["cat/link.png"]


def test_zip_bomb_entries_are_skipped_unread():
    entries = image_folder({"cat": 2, "dog": 2}) | {"cat/bomb.png": bytes(60 << 20), "dog/dense.png": bytes(5 << 20)}
    data = make_zip(entries)
    assert len(data) < 1 << 20  # 65 MB of zeros compress to almost nothing

    dataset = dataset_from_zip(data)

    assert dataset.counts() == {"cat": 2, "dog": 2}
    why = reasons(dataset)
    assert "60 MB" in why["cat/bomb.png"] and "limit is 50 MB" in why["cat/bomb.png"]
    assert "compressed" in why["dog/dense.png"] and "zip bomb" in why["dog/dense.png"]


def test_small_files_may_compress_well():
    # A solid-colour BMP compresses far past 200x and is still a perfectly good image.
    buf = io.BytesIO()
    Image.new("RGB", (300, 300), (10, 200, 30)).save(buf, "BMP")
    entries = image_folder({"cat": 2, "dog": 2}) | {"dog/solid.bmp": buf.getvalue()}
    assert dataset_from_zip(make_zip(entries)).counts() == {"cat": 2, "dog": 3}


def test_declared_total_over_the_limit_refuses_the_zip():
    data = make_zip(image_folder({"cat": 2, "dog": 2}))
    for name in (b"cat/0.png", b"dog/2.png"):
        data = patch_central(data, name, file_size=0x7FFF0000)  # declares 2 GB each
    with pytest.raises(DatasetError, match=r"unpacks to 4 GB; the limit is 1 GB"):
        dataset_from_zip(data)


def test_total_limit_counts_real_entries():
    entries = image_folder({"cat": 2}) | {f"dog/{i}.bmp": bytes(300_000) for i in range(4)}
    with pytest.raises(DatasetError, match="unpacks to"):
        dataset_from_zip(make_zip(entries), limits=ZipLimits(max_total_bytes=1 << 20))


def test_too_many_files_refused_quickly():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for i in range(20_000):
            zf.writestr(f"c{i % 2}/{i}.png", b"x")
    started = time.perf_counter()
    with pytest.raises(DatasetError, match=r"holds 20,000 files; the limit is 5,000"):
        dataset_from_zip(buf.getvalue())
    assert time.perf_counter() - started < 5


def test_metadata_does_not_count_towards_max_files():
    entries = image_folder({"cat": 3, "dog": 3}) | {f"__MACOSX/cat/._{i}.png": b"x" for i in range(10)}
    assert dataset_from_zip(make_zip(entries), limits=ZipLimits(max_files=6)).counts() == {"cat": 3, "dog": 3}


def test_sizes_that_lie_are_caught():
    entries = image_folder({"cat": 2, "dog": 2}) | {"cat/short.png": png(50), "dog/long.png": png(51)}
    data = make_zip(entries)
    data = patch_central(data, b"cat/short.png", file_size=len(png(50)) - 10)  # declares less than it holds
    data = patch_central(data, b"dog/long.png", file_size=len(png(51)) + 10)  # declares more than it holds
    dataset = dataset_from_zip(data)
    assert dataset.counts() == {"cat": 2, "dog": 2}
    why = reasons(dataset)
    assert "damaged" in why["cat/short.png"]
    assert "does not match" in why["dog/long.png"]


def test_encrypted_zip_refused():
    data = patch_central(make_zip(image_folder({"cat": 2, "dog": 2})), b"dog/3.png", flags=0x1)
    with pytest.raises(DatasetError, match="password"):
        dataset_from_zip(data)


@pytest.mark.parametrize(
    "data",
    [b"", os.urandom(4096), b"PK\x03\x04 not really", png(1)],
    ids=["empty", "random", "zip-magic", "png"],
)
def test_not_a_zip(data: bytes):
    with pytest.raises(DatasetError) as caught:
        dataset_from_zip(data)
    assert isinstance(caught.value, ZooScopeError)
    message = str(caught.value)
    assert message.endswith(".") and "zip" in message


def test_truncated_zip():
    data = make_zip(image_folder({"cat": 2, "dog": 2}))
    with pytest.raises(DatasetError, match=r"^The upload is not a valid zip file\.$"):
        dataset_from_zip(data[: len(data) // 2])
