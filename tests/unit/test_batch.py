"""`python -m core batch`: a local Ray cluster (2 CPUs, started once for this module) and the local engine
classify and embed a folder of photos and hostile files into Parquet, one row per file.

One Ray session serves every Ray test (each run still starts its own actors, which load the model).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from core.__main__ import main
from core.batch.local import run_local
from core.batch.output import PART_ROWS, prepare_output, read_rows
from core.batch.run import RAY_MISSING, run_batch
from core.batch.sources import NOT_A_FILE, SourceError, list_source
from core.batch.work import BatchJob, BatchWorker
from core.errors import ZooScopeError
from tests.hostile import EXAMPLES, Hostile, corpus

LITE0 = "efficientnet_lite0"
EXAMPLE_PHOTOS = sorted(EXAMPLES.glob("*.jpg"))

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def disk_name(name: str) -> str:
    """A hostile upload's name as a file name: no path separators, not hidden (kept as odd as it can be)."""
    return name.replace("/", "∕").lstrip(".")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """The example photos, every hostile file, a photo two folders down named as a Sony camera names
    them, a named pipe posing as a JPEG, and two files a folder listing leaves out."""
    folder = tmp_path_factory.mktemp("photos")
    for photo in EXAMPLE_PHOTOS:
        shutil.copy(photo, folder / photo.name)
    for case in corpus():
        (folder / disk_name(case.name)).write_bytes(case.data)
    (folder / "nested" / "deeper").mkdir(parents=True)
    shutil.copy(EXAMPLES / "chelsea.jpg", folder / "nested" / "deeper" / "_DSC0001.JPG")
    os.mkfifo(folder / "pipe.jpg")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "notes.txt").write_text("not a photo")
    return folder


def expected_rows(folder: Path) -> dict[str, Hostile | str]:
    """Every row a run over `folder` must write: file -> its hostile case, "photo", or NOT_A_FILE."""
    rows: dict[str, Hostile | str] = {str(folder / photo.name): "photo" for photo in EXAMPLE_PHOTOS}
    rows.update({str(folder / disk_name(case.name)): case for case in corpus()})
    rows[str(folder / "nested" / "deeper" / "_DSC0001.JPG")] = "photo"
    rows[str(folder / "pipe.jpg")] = NOT_A_FILE
    return rows


def classified(case: Hostile | str) -> bool:
    return case == "photo" or (isinstance(case, Hostile) and case.expect == "ok")


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A local Ray with 2 CPUs, started the way the command starts one, for every Ray test here; its
    session files (logs, sockets, spilled objects) in a temporary folder, nothing in the home folder."""
    import ray

    from core.batch.ray_engine import ray_session

    home_ray = Path.home() / ".ray"
    before = sorted(home_ray.rglob("*")) if home_ray.exists() else None
    temp_dir = tmp_path_factory.mktemp("ray")
    with ray_session(num_cpus=2, temp_dir=str(temp_dir)):
        assert ray.cluster_resources()["CPU"] == 2
        assert "RAY_AUTH_TOKEN" in os.environ  # this run's own token: none written to ~/.ray
        yield
    assert not ray.is_initialized() and "RAY_AUTH_TOKEN" not in os.environ
    assert any(temp_dir.glob("session_*"))
    assert (sorted(home_ray.rglob("*")) if home_ray.exists() else None) == before


@pytest.fixture(scope="module")
def ray_classified(ray_cluster, photos, tmp_path_factory):
    """Ray classifies the folder, resuming what the local engine started with one photo: OUT is the
    same folder of Parquet files for both engines. (Each Ray run starts its actors, which import torch
    and load the model: one run does both jobs.)"""
    out = tmp_path_factory.mktemp("ray") / "out.parquet"
    job = BatchJob("classify", LITE0)
    started = run_batch(job, str(photos / "coffee.jpg"), str(out), engine="local")
    report = run_batch(job, str(photos), str(out), engine="ray", resume=True)
    return started, report, out


@pytest.fixture(scope="module")
def local_classified(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "out.parquet"
    report = run_batch(BatchJob("classify", LITE0), str(photos), str(out), engine="local")
    return report, pq.read_table(out)


def by_file(table) -> dict[str, dict]:
    rows = table.to_pylist()
    assert len({row["file"] for row in rows}) == len(rows), "a file has more than one row"
    return {row["file"]: row for row in rows}


# --- Ray ------------------------------------------------------------------------------------------


def test_ray_resumes_the_local_run_one_row_per_file_errors_as_rows(ray_classified, photos):
    started, report, out = ray_classified
    table = pq.read_table(out)
    expected = expected_rows(photos)
    rows = by_file(table)
    assert set(rows) == set(expected)
    assert table.column_names == ["file", "top1", "probability", "top_k", "error"]
    for file, case in expected.items():
        row = rows[file]
        if classified(case):
            assert row["error"] is None and row["top1"], file
            assert len(row["top_k"]) == 5 and row["top_k"][0] == {
                "label": row["top1"],
                "probability": row["probability"],
            }
            assert [p["probability"] for p in row["top_k"]] == sorted(
                (p["probability"] for p in row["top_k"]), reverse=True
            )
        else:
            words = case.words if isinstance(case, Hostile) else ("not a regular file",)
            assert row["top1"] is None and row["top_k"] is None and row["probability"] is None, file
            assert all(word in row["error"] for word in words), (file, row["error"])
    failed = sum(1 for case in expected.values() if not classified(case))
    assert (started.done, started.rows) == (1, 1)
    assert (report.engine, report.listed, report.skipped, report.done, report.errors, report.rows) == (
        "ray", len(expected), 1, len(expected) - 1, failed, len(expected),
    )  # fmt: skip
    assert report.runtime == "onnx"
    assert any(note.endswith("not images by their extension: 1") for note in report.notes)  # notes.txt
    assert len(list(out.glob("*.parquet"))) >= 2  # the local engine's part, and Ray's


def test_ray_gives_the_same_top1_as_python_m_core_classify(ray_classified, photos, capsys):
    rows = by_file(pq.read_table(ray_classified[2]))
    files = sorted(file for file, case in expected_rows(photos).items() if classified(case))
    assert main(["classify", *files, "--format", "json"]) == 0
    answers = {answer["file"]: answer["predictions"] for answer in json.loads(capsys.readouterr().out)}
    for file in files:
        assert rows[file]["top1"] == answers[file][0]["label"], file
        assert rows[file]["probability"] == pytest.approx(answers[file][0]["probability"], abs=1e-5)
    assert rows[str(photos / "coffee.jpg")]["top1"] == "espresso"


def test_the_local_engine_gives_identical_rows(ray_classified, local_classified):
    ray_rows, local_rows = by_file(pq.read_table(ray_classified[2])), by_file(local_classified[1])
    assert set(ray_rows) == set(local_rows)
    for file, row in ray_rows.items():
        other = local_rows[file]
        assert (row["top1"], row["error"]) == (other["top1"], other["error"]), file
        if row["top_k"] is not None:  # batches are cut differently by the two engines: forwards round differently
            assert [p["label"] for p in row["top_k"]] == [p["label"] for p in other["top_k"]]
            assert [p["probability"] for p in row["top_k"]] == pytest.approx(
                [p["probability"] for p in other["top_k"]], abs=1e-6
            )
    assert local_classified[0].errors == ray_classified[1].errors


def test_embeddings_match_core_features_on_both_engines(ray_cluster, tmp_path):
    """A file gone between listing and reading is a row in both engines (Ray's read task does not fail)."""
    from core.batch.ray_engine import run_ray
    from core.datasets.sources import from_paths
    from core.engines.choice import load_handle
    from core.features.analysis import embed
    from core.features.embedding import embedder_for
    from core.models.keys import ModelKey

    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in EXAMPLE_PHOTOS:
        shutil.copy(photo, folder / photo.name)
    cases = {case.name: case for case in corpus()}
    for name in ("exif-rotated.jpg", "empty.jpg", "document.jpg"):
        (folder / name).write_bytes(cases[name].data)
    (folder / "vanished.jpg").write_bytes((EXAMPLES / "coffee.jpg").read_bytes())
    job = BatchJob("embed", LITE0, batch_size=4)
    listing = list_source(str(folder))
    (folder / "vanished.jpg").unlink()

    worker = BatchWorker(job)
    outputs = {engine: prepare_output(str(tmp_path / engine), job, resume=False) for engine in ("ray", "local")}
    run_ray(job, listing, outputs["ray"])
    run_local(worker, listing, outputs["local"])
    ray_rows, local_rows = (by_file(read_rows(outputs[engine])) for engine in ("ray", "local"))
    assert (
        set(ray_rows)
        == set(local_rows)
        == {str(folder / name) for name in os.listdir(tmp_path / "photos")} | {str(folder / "vanished.jpg")}
    )
    gone = ray_rows[str(folder / "vanished.jpg")]
    assert gone["embedding"] is None and gone["error"].startswith("Could not read the file")
    assert local_rows[str(folder / "vanished.jpg")]["error"] == gone["error"]
    assert "empty" in ray_rows[str(folder / "empty.jpg")]["error"]

    # What `python -m core embed FOLDER` computes (core.features.analysis over core.features.embedding), to 1e-5.
    model = load_handle(ModelKey(LITE0))
    reference = embed(embedder_for(model.torch, runtime=model.runtime), from_paths([folder]))
    assert len(reference) == 4 and {failure.file for failure in reference.failures} == {
        str(folder / name) for name in ("empty.jpg", "document.jpg")
    }
    for failure in reference.failures:
        assert ray_rows[failure.file]["error"] == local_rows[failure.file]["error"] == failure.error
        assert ray_rows[failure.file]["embedding"] is None
    embedded = {}
    for file, vector in zip(reference.files, reference.vectors, strict=True):
        for rows in (ray_rows, local_rows):
            assert rows[file]["error"] is None
            assert np.asarray(rows[file]["embedding"]) == pytest.approx(vector, abs=1e-5)
        embedded[Path(file).name] = np.asarray(ray_rows[file]["embedding"])
    assert embedded["chelsea.jpg"].shape == (1280,)  # EfficientNet-Lite0's penultimate layer

    def cosine(a: str, b: str) -> float:
        x, y = embedded[a], embedded[b]
        return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))

    # The cat turned on its side (EXIF) is the same photo; a cup of coffee is not.
    assert cosine("chelsea.jpg", "exif-rotated.jpg") > 0.95 > cosine("chelsea.jpg", "coffee.jpg")


# --- the local engine and resume -------------------------------------------------------------------


def test_the_command_resumes_skipping_the_files_already_in_out(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in EXAMPLE_PHOTOS[:2]:
        shutil.copy(photo, folder / photo.name)
    out = tmp_path / "out.parquet"
    command = ["batch", "classify", str(folder), "--out", str(out), "--format", "json"]
    assert main(command) == 0
    first = json.loads(capsys.readouterr().out)
    assert (first["done"], first["skipped"], first["rows"]) == (2, 0, 2)

    shutil.copy(EXAMPLE_PHOTOS[2], folder / EXAMPLE_PHOTOS[2].name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    assert main(command) == 2
    assert "already holds results" in capsys.readouterr().err
    assert main([*command, "--resume"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert (second["done"], second["skipped"], second["errors"], second["rows"]) == (2, 2, 1, 4)
    assert main([*command, "--resume"]) == 0
    assert json.loads(capsys.readouterr().out)["done"] == 0

    rows = by_file(pq.read_table(out))  # pandas, pyarrow, Spark read the folder as one table
    assert set(rows) == {str(folder / name) for name in os.listdir(folder)}
    assert "truncated or corrupt" in rows[str(folder / "broken.jpg")]["error"]


def test_resume_sets_a_half_written_part_aside_and_does_its_files_again(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(EXAMPLES / "coffee.jpg", folder / "coffee.jpg")
    out = tmp_path / "out.parquet"
    assert main(["batch", "embed", str(folder), "--out", str(out)]) == 0
    (part,) = out.iterdir()
    part.write_bytes(part.read_bytes()[:100])  # a run stopped while writing it
    capsys.readouterr()
    assert main(["batch", "embed", str(folder), "--out", str(out), "--resume"]) == 0
    assert "could not be read" in capsys.readouterr().err
    assert [row["file"] for row in pq.read_table(out).to_pylist()] == [str(folder / "coffee.jpg")]
    assert any(path.name.startswith("_damaged-") for path in out.iterdir())


def test_the_local_engine_writes_a_part_every_so_many_rows_and_reports_progress(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(5):
        shutil.copy(EXAMPLES / "coffee.jpg", folder / f"coffee-{index}.jpg")
    job = BatchJob("classify", LITE0, top_k=2, batch_size=2)
    output = prepare_output(str(tmp_path / "out"), job, resume=False)
    seen = []
    written = run_local(
        BatchWorker(job), list_source(str(folder)), output, progress=lambda *a: seen.append(a), rows_per_file=2
    )
    assert written == 5 and len(pq.ParquetDataset(tmp_path / "out").fragments) == 3
    assert [(done, total) for done, total, _ in seen] == [(2, 5), (4, 5), (5, 5)]
    assert {len(row["top_k"]) for row in read_rows(output).to_pylist()} == {2}
    assert PART_ROWS >= 1000  # a real run writes few, large files


def test_a_batch_that_fails_as_a_whole_is_done_file_by_file(monkeypatch):
    """Only the file the model cannot take loses its answer."""
    import pyarrow as pa

    from core.batch import work
    from core.batch.sources import input_schema

    real = work.classify_files

    def fussy(model, files, **kwargs):
        if any(name == "strange.jpg" for name, _ in files):
            raise RuntimeError("an operator failed")
        return real(model, files, **kwargs)

    monkeypatch.setattr(work, "classify_files", fussy)
    coffee = (EXAMPLES / "coffee.jpg").read_bytes()
    batch = pa.Table.from_pylist(
        [
            {"file": "coffee.jpg", "bytes": coffee, "error": None},
            {"file": "strange.jpg", "bytes": coffee, "error": None},
            {"file": "gone.jpg", "bytes": None, "error": "Could not read the file: gone."},
        ],
        schema=input_schema(),
    )
    rows = BatchWorker(BatchJob("classify", LITE0))(batch).to_pylist()
    assert [row["file"] for row in rows] == ["coffee.jpg", "strange.jpg", "gone.jpg"]
    assert rows[0]["top1"] == "espresso" and rows[0]["error"] is None
    assert rows[1]["top1"] is None and "an operator failed" in rows[1]["error"]
    assert rows[2]["error"] == "Could not read the file: gone."


# --- errors before work ---------------------------------------------------------------------------


@pytest.fixture
def no_reading(monkeypatch):
    """Fails the test if any file is read (by either engine)."""
    from core.batch import local, ray_engine

    def refuse(*args, **kwargs):
        raise AssertionError("a file was read")

    monkeypatch.setattr(local, "read_file", refuse)
    monkeypatch.setattr(ray_engine, "run_ray", refuse)


def one_line_error(capsys) -> str:
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_missing_weights_fail_in_one_line_before_any_image_is_read(engine, no_reading, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("ZOOSCOPE_OFFLINE", "1")
    out = tmp_path / "out.parquet"
    code = main(["batch", "classify", str(EXAMPLES), "--model", "resnet18", "--out", str(out), "--engine", engine])
    assert code == 2
    assert "resnet18-f37072fd.pth" in one_line_error(capsys)
    assert not list(out.glob("*.parquet"))


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        (["--model", "resnet5O"], "There is no model called 'resnet5O'"),
        (["--address", "auto"], "--address joins a Ray cluster"),
        (["--runtime", "tpu"], "unknown runtime 'tpu'"),
    ],
)
def test_bad_options_fail_in_one_line_before_anything(arguments, words, no_reading, tmp_path, capsys):
    out = tmp_path / "out.parquet"
    assert main(["batch", "classify", str(EXAMPLES), "--out", str(out), *arguments]) == 2
    assert words in one_line_error(capsys)
    assert not out.exists()


def test_an_output_that_cannot_be_written_fails_before_any_image_is_read(no_reading, tmp_path, capsys):
    a_file = tmp_path / "results.parquet"
    a_file.write_bytes(b"PAR1")
    assert main(["batch", "classify", str(EXAMPLES), "--out", str(a_file)]) == 2
    assert "is a file" in one_line_error(capsys)
    assert main(["batch", "classify", str(EXAMPLES), "--out", str(a_file / "out.parquet")]) == 2
    assert "Cannot" in one_line_error(capsys)


def test_resuming_another_job_is_refused(tmp_path, capsys):
    out = str(tmp_path / "out.parquet")
    coffee = str(EXAMPLES / "coffee.jpg")
    assert main(["batch", "classify", coffee, "--out", out]) == 0
    capsys.readouterr()
    assert main(["batch", "embed", coffee, "--out", out, "--resume"]) == 2
    assert "another job (classify with efficientnet_lite0, top-5; this one: embed" in one_line_error(capsys)
    assert main(["batch", "classify", coffee, "--out", out, "--resume", "--top-k", "3"]) == 2
    one_line_error(capsys)


def test_a_missing_source_or_ray_fails_in_one_line(no_reading, monkeypatch, tmp_path, capsys):
    out = str(tmp_path / "out.parquet")
    assert main(["batch", "embed", str(tmp_path / "nowhere"), "--out", out]) == 2
    assert "does not exist" in one_line_error(capsys)
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(ZooScopeError, match="requirements-batch.txt"):
        run_batch(BatchJob("embed", LITE0), str(EXAMPLES), out, engine="ray")
    assert "requirements-batch.txt" in RAY_MISSING


# --- listing --------------------------------------------------------------------------------------


def test_a_folder_lists_images_at_any_depth_and_keeps_underscore_names(photos):
    listing = list_source(str(photos))
    assert set(listing.names()) == set(expected_rows(photos))
    assert listing.names()[: len(listing.files)] == sorted(listing.names()[: len(listing.files)])
    assert [listing.name(path) for path in listing.not_files] == [str(photos / "pipe.jpg")]
    assert listing.skipped == 1  # notes.txt; .DS_Store is hidden


def test_globs_match_within_names_and_across_folders(photos, monkeypatch):
    deep = list_source(f"{photos}/**/*.JPG")
    assert deep.names() == [str(photos / "nested" / "deeper" / "_DSC0001.JPG")]
    top = list_source(f"{photos}/c*.jpg")
    assert top.names() == [str(photos / name) for name in ("chelsea.jpg", "cmyk.jpg", "coffee.jpg")]
    monkeypatch.chdir(photos)
    assert list_source("nested/*/_DSC*").names() == deep.names()  # relative globs too, names absolute
    odd = photos / disk_name("../ünïcødé/☃ photo?.jpg")
    assert list_source(str(odd)).names() == [str(odd)]  # an existing name is never taken for a glob
    assert list_source(f"file://{photos}/coffee.jpg").names() == [str(photos / "coffee.jpg")]
    with pytest.raises(SourceError, match="no file matches"):
        list_source(f"{photos}/*.heic")
    with pytest.raises(SourceError, match="no file matches"):
        list_source(f"{photos}/*.JPG")  # as in a shell, a pattern's case counts


def test_the_actors_get_core_and_the_drivers_settings(monkeypatch):
    """Ray ships `core` to every worker, on this machine or a cluster's, with the driver's ZooScope and
    malloc settings; each actor runs its model on one thread."""
    from core.batch.ray_engine import runtime_env

    monkeypatch.setenv("ZOOSCOPE_WEIGHTS_DIR", "/data/weights")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "1")
    monkeypatch.setenv("ZOOSCOPE_TORCH_THREADS", "8")
    monkeypatch.delenv("ZOOSCOPE_RUNTIME", raising=False)
    env = runtime_env()
    assert [Path(module).name for module in env["py_modules"]] == ["core"]
    assert (Path(env["py_modules"][0]) / "batch" / "work.py").is_file()
    variables = env["env_vars"]
    assert variables["ZOOSCOPE_WEIGHTS_DIR"] == "/data/weights" and variables["MALLOC_ARENA_MAX"] == "1"
    assert variables["ZOOSCOPE_TORCH_THREADS"] == "1" and "ZOOSCOPE_RUNTIME" not in variables
