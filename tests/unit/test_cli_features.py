"""`python -m core embed|similar|duplicates` in-process: files written, JSON schemas, exit codes, messages."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageOps

from core.__main__ import main
from core.features.analysis import DEFAULT_DUPLICATE_THRESHOLD
from tests.cli import run
from tests.planted import altered

EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def library(tmp_path: Path) -> Path:
    """The example photos in class folders, a copy of coffee resized and one mirrored, and a broken file."""
    root = tmp_path / "library"
    for name in ("chelsea", "rocket"):
        (root / name).mkdir(parents=True)
        shutil.copy(EXAMPLES / f"{name}.jpg", root / name / f"{name}.jpg")
    (root / "coffee").mkdir()
    shutil.copy(EXAMPLES / "coffee.jpg", root / "coffee" / "coffee.jpg")
    with Image.open(EXAMPLES / "coffee.jpg") as opened:
        coffee = opened.convert("RGB")
    (root / "coffee" / "coffee-resized.jpg").write_bytes(altered(coffee, "resized"))
    (root / "coffee" / "coffee-mirror.jpg").write_bytes(altered(coffee, "mirror"))
    (root / "coffee" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return root


def test_embed_writes_every_file_as_a_row(capsys, library, tmp_path):
    out_file = tmp_path / "embeddings.parquet"
    code, out, err = run(capsys, "embed", str(library), "--out", str(out_file))
    assert code == 0
    assert out.strip() == (
        f"5 images embedded by efficientnet_lite0 (1280 numbers each, ONNX Runtime); 1 could not be read; "
        f"written to {out_file}"
    )
    assert err == f"error: {library}/coffee/broken.jpg: The image data is truncated or corrupt.\n"
    table = pq.read_table(out_file)
    rows = table.to_pylist()
    assert [Path(row["file"]).relative_to(library).as_posix() for row in rows] == [
        "chelsea/chelsea.jpg",
        "coffee/broken.jpg",
        "coffee/coffee-mirror.jpg",
        "coffee/coffee-resized.jpg",
        "coffee/coffee.jpg",
        "rocket/rocket.jpg",
    ]
    assert [row["label"] for row in rows] == ["chelsea", "coffee", "coffee", "coffee", "coffee", "rocket"]
    assert rows[1]["embedding"] is None and rows[1]["error"] == "The image data is truncated or corrupt."
    assert all(len(row["embedding"]) == 1280 and row["error"] is None for i, row in enumerate(rows) if i != 1)


def test_similar_finds_the_original_of_a_copy_first(capsys, tmp_path):
    out_file = tmp_path / "examples.parquet"
    assert run(capsys, "embed", str(EXAMPLES), "--out", str(out_file))[0] == 0
    with Image.open(EXAMPLES / "rocket.jpg") as opened:
        query = tmp_path / "rocket-mirror.jpg"
        ImageOps.mirror(opened.convert("RGB")).save(query, "JPEG", quality=85)
    code, out, _ = run(capsys, "similar", str(out_file), "--query", str(query), "--k", "2", "--format", "json")
    assert code == 0
    found = json.loads(out)
    assert [set(row) for row in found] == [{"file", "similarity"}] * 2
    assert found[0]["file"] == f"{EXAMPLES}/rocket.jpg" and found[0]["similarity"] > 0.9
    assert found[0]["similarity"] > found[1]["similarity"]
    code, out, _ = run(capsys, "similar", str(out_file), "--query", str(query))
    best = out.splitlines()[1].split()
    assert code == 0 and best == ["1.", f"{found[0]['similarity']:.3f}", f"{EXAMPLES}/rocket.jpg"]
    assert len(out.splitlines()) == 1 + 3  # k larger than the set: every image, once


def test_similar_errors_are_one_line_and_exit_2(capsys, tmp_path):
    code, _, err = run(capsys, "similar", str(tmp_path / "none.parquet"), "--query", str(EXAMPLES / "coffee.jpg"))
    assert code == 2 and err == f"error: {tmp_path / 'none.parquet'} does not exist.\n"
    out_file = tmp_path / "examples.parquet"
    run(capsys, "embed", str(EXAMPLES / "coffee.jpg"), "--out", str(out_file))
    bad = tmp_path / "query.jpg"
    bad.write_bytes(b"%PDF-1.7")
    code, _, err = run(capsys, "similar", str(out_file), "--query", str(bad))
    assert code == 2 and err == f"error: {bad}: The file is a PDF document, not an image.\n"
    with pytest.raises(SystemExit) as exit_info:  # argparse's own error: usage, then one line
        main(["similar", str(out_file), "--query", str(EXAMPLES / "coffee.jpg"), "--k", "0"])
    assert exit_info.value.code == 2 and "give a whole number of at least 1" in capsys.readouterr().err


def test_duplicates_groups_the_copies_with_their_original(capsys, library):
    code, out, err = run(capsys, "duplicates", str(library), "--format", "json")
    assert code == 0 and "broken.jpg" in err
    report = json.loads(out)
    assert report["threshold"] == DEFAULT_DUPLICATE_THRESHOLD
    assert [[Path(f).name for f in group] for group in report["groups"]] == [
        ["coffee-mirror.jpg", "coffee-resized.jpg", "coffee.jpg"]
    ]
    code, out, _ = run(capsys, "duplicates", str(library), "--threshold", "0.999", "--runtime", "torch")
    assert code == 0 and out.startswith("no near-duplicates among 5 images at similarity 0.999 or more")
    code, out, _ = run(capsys, "duplicates", str(library))
    assert code == 0 and out.startswith("group 1: 3 images, linked at similarity 0.61 or more")


def test_nothing_to_embed_is_a_clear_error(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    code, out, err = run(capsys, "duplicates", str(empty))
    assert code == 2 and out == ""
    assert err.splitlines()[-1] == f"error: No images to embed: {empty} holds no image files."
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"")
    code, _, err = run(capsys, "embed", str(broken), "--out", str(tmp_path / "x.parquet"))
    assert code == 2 and err.splitlines()[-1] == "error: None of the 1 files could be read as an image."
    assert not (tmp_path / "x.parquet").exists()
    code, _, err = run(capsys, "embed", str(tmp_path / "missing"), "--out", str(tmp_path / "x.parquet"))
    assert code == 2 and err == f"error: {tmp_path / 'missing'} does not exist.\n"


@pytest.mark.parametrize("threshold", ["0", "1.5", "x"])
def test_a_threshold_out_of_range_is_an_argparse_error(capsys, threshold):
    with pytest.raises(SystemExit) as exit_info:
        main(["duplicates", str(EXAMPLES), "--threshold", threshold])
    assert exit_info.value.code == 2


@pytest.mark.parametrize("command", [["embed", "--out", "x.parquet"], ["duplicates"]])
def test_an_unknown_runtime_is_a_one_line_error(capsys, command):
    code, out, err = run(capsys, command[0], str(EXAMPLES), *command[1:], "--runtime", "tensorrt")
    assert code == 2 and out == ""
    assert err == "error: unknown runtime 'tensorrt'; choose one of auto, torch, onnx, int8\n"


def test_embed_from_a_zip_of_class_folders(capsys, tmp_path):
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in ("chelsea", "coffee"):
            archive.write(EXAMPLES / f"{name}.jpg", f"photos/{name}/{name}.jpg")
    data = tmp_path / "photos.zip"
    data.write_bytes(buffer.getvalue())
    out_file = tmp_path / "zip.parquet"
    assert run(capsys, "embed", str(data), "--out", str(out_file), "--runtime", "torch")[0] == 0
    rows = pq.read_table(out_file).to_pylist()
    assert [(row["file"], row["label"]) for row in rows] == [
        (f"{data}/photos/chelsea/chelsea.jpg", "chelsea"),
        (f"{data}/photos/coffee/coffee.jpg", "coffee"),
    ]
    assert pq.read_schema(out_file).metadata[b"zooscope"].startswith(b"{")
