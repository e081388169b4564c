"""ONNX Runtime as the CPU engine: verified exports, the cache that holds them, int8, fallbacks, threads.

The bundled models (real ImageNet weights) are the subjects. Their exports are made once per test run
in the session's temporary cache (tests/conftest.py); the tests that need a cache of their own point
ZOOSCOPE_CACHE_DIR at one and, where they only test the cache, copy a made export into it instead of
exporting again.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
import torch

from core import runtime
from core.classify.predict import classify_files, preprocess, probabilities
from core.datasets.check_images import check_images
from core.engines import onnx_cache, sessions, verified
from core.engines.choice import load_handle
from core.engines.handle import ModelHandle, PyTorchEngine
from core.engines.onnx_engine import OnnxEngine
from core.engines.onnx_export import Agreement, ExportFailed, check_batches, compare_classifiers
from core.engines.pool import ModelPool
from core.images import decode_image
from core.models.keys import ModelKey
from core.models.loading import load_model

EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"
LITE = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def photos() -> list[tuple[str, bytes]]:
    return [(path.name, path.read_bytes()) for path in sorted(EXAMPLES.glob("*.jpg"))]


LITE0 = ModelKey("efficientnet_lite0")


def in_onnx(model: ModelHandle) -> bool:
    return isinstance(model.inference, OnnxEngine)


def in_pytorch(model: ModelHandle) -> bool:
    return isinstance(model.inference, PyTorchEngine) and model.runtime == "torch"


@pytest.fixture(scope="module")
def onnx_lite0() -> ModelHandle:
    model = load_handle(LITE0, runtime_choice="onnx")
    assert in_onnx(model), model.note
    return model


@pytest.fixture
def own_cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(onnx_cache.CACHE_DIR_ENV, str(folder))
    return folder


def fp32_folder(root: Path, name: str = "efficientnet_lite0") -> Path:
    (folder,) = (root / "onnx" / name).glob("*/fp32")
    return folder


# --- the same answers as PyTorch ------------------------------------------------------------------


@pytest.mark.parametrize("name", LITE)
def test_lite_models_give_pytorchs_answers_on_the_example_photos(name):
    model = load_handle(ModelKey(name))  # auto on the CPU: ONNX Runtime, once verified
    assert in_onnx(model) and model.runtime == "onnx" and model.name == name
    reference = load_model(name)
    images = [decode_image(data) for _, data in photos()]
    batch = preprocess(reference, images)
    expected, found = probabilities(reference, batch), probabilities(model, batch)
    assert torch.equal(expected.argmax(dim=1), found.argmax(dim=1))
    assert float((expected - found).abs().max()) <= 1e-4
    assert model.report["passed"] and model.report["images"] == len(check_images())
    assert model.agreement == 1.0


def test_the_handle_classifies_like_its_torch_face(onnx_lite0):
    reference = onnx_lite0.torch
    assert onnx_lite0.spec is reference.spec and onnx_lite0.preprocess is reference.preprocess
    assert onnx_lite0.categories == reference.categories and onnx_lite0.device == torch.device("cpu")
    results = classify_files(onnx_lite0, photos(), k=3)
    assert [r.top1.label for r in results] == [r.top1.label for r in classify_files(reference, photos(), k=3)]
    assert all(r.model == "efficientnet_lite0" for r in results)
    # What the session holds is what the export weighs; the PyTorch module underneath is not counted.
    files = json.loads((fp32_folder(onnx_cache.cache_root().path) / onnx_cache.MANIFEST).read_text())["files"]
    assert onnx_lite0.memory_mb == pytest.approx(sum(f["bytes"] for f in files.values()) / 2**20)
    assert onnx_lite0.memory_mb == pytest.approx(reference.memory_mb, rel=0.05)


def test_a_later_load_reads_the_cache_without_exporting(onnx_lite0, monkeypatch):
    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(verified, "export_module", no_export)
    again = load_handle(LITE0, runtime_choice="onnx")
    assert in_onnx(again) and again.report == onnx_lite0.report


def test_the_export_has_a_dynamic_batch(onnx_lite0):
    x = torch.randn(3, 3, 224, 224)
    with torch.inference_mode():
        expected = onnx_lite0.torch.forward(x)
    assert onnx_lite0.forward(x).shape == (3, 1000)
    assert float((onnx_lite0.forward(x) - expected).abs().max()) < 1e-3


# --- the cache -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def made_export(onnx_lite0) -> Path:
    """The session cache's verified lite0 export (fp32 folder)."""
    return fp32_folder(onnx_cache.cache_root().path)


def copy_export(source: Path, into: Path) -> Path:
    """A made export copied into another cache under the same key: no export needed."""
    target = into / source.relative_to(source.parents[3])
    shutil.copytree(source, target)
    return target


@pytest.fixture
def replay_export(made_export, monkeypatch) -> list[Path]:
    """export_module replaced by a copy of the made export's files (the cache is under test, not the
    exporter); returns the paths it was asked to write."""
    calls: list[Path] = []

    def export(module, input_size, path, **kwargs):
        calls.append(Path(path))
        shutil.copy(made_export / "model.onnx", path)
        shutil.copy(made_export / "model.onnx.data", Path(path).parent)
        return path

    monkeypatch.setattr(verified, "export_module", export)
    return calls


def damage(folder: Path, how: str) -> None:
    data = folder / "model.onnx.data"
    if how == "tamper":
        raw = bytearray(data.read_bytes())
        raw[len(raw) // 2] ^= 0xFF  # one flipped byte in the middle of the weights: same size
        data.write_bytes(bytes(raw))
    elif how == "truncate":
        data.write_bytes(data.read_bytes()[:1000])
    elif how == "delete the data file":
        data.unlink()
    else:
        (folder / onnx_cache.MANIFEST).write_text("{not json")


@pytest.mark.parametrize("how", ["tamper", "truncate", "delete the data file", "garble the manifest"])
def test_a_damaged_cached_file_is_detected(made_export, tmp_path, how):
    folder = copy_export(made_export, tmp_path)
    assert onnx_cache.read_manifest(folder)["files"].keys() == {"model.onnx", "model.onnx.data"}
    damage(folder, how)
    with pytest.raises(onnx_cache.DamagedArtifact):
        onnx_cache.read_manifest(folder)


def test_a_damaged_export_is_replaced_and_never_run(made_export, own_cache, replay_export, monkeypatch):
    folder = copy_export(made_export, own_cache)
    good = onnx_cache.sha256_file(folder / "model.onnx.data")
    damage(folder, "tamper")
    opened: list[str] = []  # the weights' SHA-256 at every session ONNX Runtime opens
    real_open = sessions.open_session

    def watched_open(path, **kwargs):
        opened.append(onnx_cache.sha256_file(Path(path).parent / "model.onnx.data"))
        return real_open(path, **kwargs)

    monkeypatch.setattr(sessions, "open_session", watched_open)
    model = load_handle(LITE0, runtime_choice="onnx")
    assert in_onnx(model) and len(replay_export) == 1  # exported again, once
    assert onnx_cache.read_manifest(folder)["files"]["model.onnx.data"]["sha256"] == good  # replaced whole
    assert opened and set(opened) == {good}  # the damaged file never reached ONNX Runtime
    assert [p.name for p in folder.parent.iterdir()] == ["fp32"]  # nothing left aside


def test_a_failed_check_against_pytorch_falls_back(own_cache, replay_export, monkeypatch):
    monkeypatch.setattr(verified, "compare_classifiers", lambda *args: Agreement(39, 37, 2e-2, 1e-4))
    model = load_handle(LITE0, runtime_choice="onnx")
    assert in_pytorch(model) and "same top-1 on 37 of 39" in model.note
    manifest = json.loads((fp32_folder(own_cache) / onnx_cache.MANIFEST).read_text())
    assert "same top-1 on 37 of 39" in manifest["failed"] and manifest["files"] == {}


def test_an_unwritable_cache_falls_back_to_a_temporary_folder_with_a_note(made_export, tmp_path, monkeypatch):
    blocker = tmp_path / "a file"
    blocker.write_text("a file where the cache folder's parent should be")
    monkeypatch.setenv(onnx_cache.CACHE_DIR_ENV, str(blocker / "cache"))
    monkeypatch.setattr(onnx_cache, "_fallbacks", {})
    root = onnx_cache.cache_root()
    assert root.path != blocker / "cache" and root.path.is_dir() and str(blocker / "cache") in root.note
    copy_export(made_export, root.path)  # no second export: the cache logic is what is tested
    model = load_handle(LITE0, runtime_choice="onnx")
    assert in_onnx(model) and model.note == root.note
    shutil.rmtree(root.path)


def test_the_cache_key_follows_the_weights_and_the_exporter():
    key = onnx_cache.cache_key("a" * 64, "exporter 1")
    assert key == onnx_cache.cache_key("a" * 64, "exporter 1") and len(key) == 16
    assert key != onnx_cache.cache_key("b" * 64, "exporter 1")
    assert key != onnx_cache.cache_key("a" * 64, "exporter 2")


def test_an_artifact_appears_whole_or_not_at_all(tmp_path):
    folder = tmp_path / "m" / "key" / "fp32"

    def make_then_fail(staging: Path) -> dict:
        (staging / "model.onnx").write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        onnx_cache.write(folder, make_then_fail, describe={})
    assert not folder.exists() and list(folder.parent.iterdir()) == []

    manifest = onnx_cache.write(folder, lambda staging: (staging / "model.onnx").write_bytes(b"x") and {}, describe={})
    assert onnx_cache.read_manifest(folder) == manifest
    assert manifest["files"]["model.onnx"]["bytes"] == 1
    # A second writer (another process) finds the place taken: the first artifact stays.
    again = onnx_cache.write(folder, lambda staging: (staging / "model.onnx").write_bytes(b"y") and {}, describe={})
    assert again == manifest and (folder / "model.onnx").read_bytes() == b"x"


# --- failures stay on PyTorch ---------------------------------------------------------------------


def test_an_export_failure_falls_back_to_pytorch_with_a_note_and_is_remembered(own_cache, monkeypatch):
    calls = []

    def failing_export(*args, **kwargs):
        calls.append(args)
        raise ExportFailed("torch.onnx could not export it (UnsupportedOperatorError: aten::imaginary_op)")

    monkeypatch.setattr(verified, "export_module", failing_export)
    model = load_handle(LITE0, runtime_choice="onnx")
    assert in_pytorch(model)
    assert "aten::imaginary_op" in model.note and model.note.startswith("PyTorch:")
    assert classify_files(model, photos()[:1])[0].top1.label  # and it still classifies
    again = load_handle(LITE0, runtime_choice="onnx")
    assert in_pytorch(again) and len(calls) == 1  # the next load does not try again
    with pytest.raises(Exception, match="not available"):
        load_handle(ModelKey("efficientnet_lite0", "int8"))  # a named engine says why it cannot be had


def test_an_unexpected_error_falls_back_without_being_remembered(own_cache, replay_export, monkeypatch):
    def broken_session(path, **kwargs):
        raise RuntimeError("onnxruntime: out of memory")

    monkeypatch.setattr(sessions, "open_session", broken_session)
    model = load_handle(LITE0, runtime_choice="onnx")
    assert in_pytorch(model) and "out of memory" in model.note
    assert not list(own_cache.rglob(onnx_cache.MANIFEST))  # nothing remembered: the next load tries again


# --- runtime choices ------------------------------------------------------------------------------


def test_torch_runtime_gives_the_pytorch_model():
    model = load_handle(LITE0, runtime_choice="torch")
    assert in_pytorch(model) and not model.note and model.agreement is None


def test_the_environment_chooses_the_runtime(monkeypatch):
    monkeypatch.setenv(runtime.RUNTIME_ENV, "torch")
    assert in_pytorch(load_handle(LITE0))


def test_the_pool_counts_what_the_sessions_hold(onnx_lite0):
    pool = ModelPool("cpu", loader=load_handle, budget_mb=1000)
    model = pool.get(LITE0)
    assert in_onnx(model)
    assert pool.used_mb() == pytest.approx(model.memory_mb)
    assert [m.name for m in pool.models()] == ["efficientnet_lite0"]
    assert pool.loaded() == [LITE0]


# --- threads ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["torch", "onnx"])
def test_eight_threads_get_bit_identical_answers(engine, onnx_lite0):
    model = onnx_lite0 if engine == "onnx" else onnx_lite0.torch
    images = [decode_image(data) for _, data in photos()]
    batches = [preprocess(model, [image]) for image in images]
    expected = [probabilities(model, batch) for batch in batches]
    found: dict[tuple[int, int], torch.Tensor] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work(thread: int) -> None:
        try:
            start.wait()
            for round_ in range(3):
                for index, batch in enumerate(batches):
                    found[(thread, round_ * len(batches) + index)] = probabilities(model, batch)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(found) == 8 * 3 * len(batches)
    for (thread, step), probs in found.items():
        assert torch.equal(probs, expected[step % len(batches)]), (thread, step)


# --- int8 -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def int8_lite0() -> ModelHandle:
    model = load_handle(ModelKey("efficientnet_lite0", "int8"))
    assert in_onnx(model)
    return model


def test_int8_agreement_is_reported_as_measured(int8_lite0, onnx_lite0):
    batches = check_batches(check_images(), onnx_lite0.preprocess)
    measured = compare_classifiers(onnx_lite0.forward, int8_lite0.forward, batches)
    assert int8_lite0.report["images"] == measured.images == len(check_images())
    assert int8_lite0.report["same_top1"] == measured.same_top1
    assert int8_lite0.agreement == pytest.approx(measured.share)
    assert int8_lite0.report["int8_ms"] > 0 and int8_lite0.report["fp32_ms"] > 0
    recommended, reason = int8_lite0.int8_verdict()
    assert (recommended, reason) == runtime.int8_verdict(
        measured.share, int8_lite0.report["int8_ms"], int8_lite0.report["fp32_ms"]
    )


def test_int8_is_a_variant_beside_fp32(int8_lite0, onnx_lite0):
    assert int8_lite0.name == "efficientnet_lite0 · int8" and int8_lite0.runtime == "int8"
    assert int8_lite0.precision == "int8" and int8_lite0.spec is onnx_lite0.spec
    assert int8_lite0.report["fp32_bytes"] == onnx_lite0.inference.file_bytes
    assert int8_lite0.inference.file_bytes < onnx_lite0.inference.file_bytes / 3  # int8 weights: about a quarter
    assert classify_files(int8_lite0, photos()[:1])[0].model == "efficientnet_lite0 · int8"


def test_a_failing_check_is_what_the_agreement_says():
    failing = Agreement(images=39, same_top1=38, max_difference=3e-3, tolerance=1e-4)
    assert not failing.passed and failing.share == pytest.approx(38 / 39)
    assert "same top-1 on 38 of 39" in failing.reason()
    assert Agreement(images=39, same_top1=39, max_difference=5e-5, tolerance=1e-4).passed
