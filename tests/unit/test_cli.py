"""`python -m core ...` run in-process: exit codes, JSON schemas, messages on stderr."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from core.__main__ import main

EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"
COFFEE, CHELSEA = str(EXAMPLES / "coffee.jpg"), str(EXAMPLES / "chelsea.jpg")
LITE = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
CATS = {"tabby", "tiger cat", "Egyptian cat"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def bad_file(tmp_path) -> str:
    path = tmp_path / "notes.jpg"
    path.write_text("not an image")
    return str(path)


# --- models ---------------------------------------------------------------------------------------


def test_models_json(capsys):
    code, out, _ = run(capsys, "models", "--format", "json")
    assert code == 0
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["efficientnet_lite0"]["available_offline"] is True
    assert {"family", "acc1", "params_m", "gflops", "size_mb", "input_size"} <= set(rows["efficientnet_lite0"])


def test_models_all_lists_every_model(capsys):
    code, out, _ = run(capsys, "models", "--all", "--format", "json")
    assert code == 0
    rows = json.loads(out)
    assert len(rows) == 83  # 80 torchvision classifiers + 3 bundled
    assert {row["name"] for row in rows} >= set(LITE) | {"resnet50", "vit_b_16"}
    assert [row["name"] for row in rows if row["available_offline"]] == LITE


def test_models_table(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0 and "efficientnet_lite0" in out and "available_offline" in out


# --- classify -------------------------------------------------------------------------------------


def test_classify_json_good_and_bad(capsys, bad_file):
    code, out, err = run(capsys, "classify", COFFEE, bad_file, "--format", "json", "--top-k", "3")
    assert code == 0
    good, bad = json.loads(out)
    assert set(good) == {"file", "model", "predictions", "latency_ms"}
    assert good["file"] == COFFEE and good["model"] == "efficientnet_lite0"
    assert len(good["predictions"]) == 3 and good["predictions"][0]["label"] == "espresso"
    assert set(good["predictions"][0]) == {"label", "probability"}
    assert bad["file"] == bad_file and bad["error"]
    assert f"error: {bad_file}" in err


def test_classify_all_bad_exits_1(capsys, bad_file, tmp_path):
    code, out, err = run(capsys, "classify", bad_file, str(tmp_path / "missing.jpg"), "--format", "json")
    assert code == 1
    assert all("error" in row for row in json.loads(out))
    assert "Could not read the file" in err


def test_classify_unknown_model_exits_2(capsys):
    code, out, err = run(capsys, "classify", COFFEE, "--model", "not_a_model")
    assert code == 2 and out == ""
    assert "There is no model called 'not_a_model'" in err


def test_top_k_zero_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["classify", COFFEE, "--top-k", "0"])
    assert info.value.code == 2
    assert "top-k must be between 1 and" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["compare", COFFEE, "--top-k", "0"])
    assert info.value.code == 2


# --- compare --------------------------------------------------------------------------------------


def test_compare_json(capsys, bad_file):
    code, out, err = run(capsys, "compare", COFFEE, bad_file, CHELSEA, "--format", "json", "--top-k", "3")
    assert code == 0
    report = json.loads(out)
    assert set(report) == {"models", "images"}
    assert [m["name"] for m in report["models"]] == LITE  # the default: the three bundled models
    for model in report["models"]:
        assert set(model) == {"name", "latency_ms", "acc1", "params", "gflops", "size_mb"}
        assert model["latency_ms"] > 0 and isinstance(model["params"], int)
    coffee, bad, chelsea = report["images"]
    assert set(coffee) == {"file", "results", "top1_agree", "consensus"}
    assert coffee["file"] == COFFEE and coffee["consensus"] == "espresso" and coffee["top1_agree"] is True
    assert list(coffee["results"]) == LITE
    for rows in coffee["results"].values():
        assert len(rows) == 3 and rows[0] == {"label": "espresso", "probability": rows[0]["probability"]}
    assert bad["file"] == bad_file and set(bad) == {"file", "error"}
    assert chelsea["consensus"] in CATS
    assert f"error: {bad_file}" in err


def test_compare_table_with_chosen_models(capsys, tmp_path):
    missing = str(tmp_path / "missing.jpg")
    code, out, err = run(capsys, "compare", missing, COFFEE, "--models", "efficientnet_lite0, efficientnet_lite2")
    assert code == 0
    assert "efficientnet_lite2" in out and "efficientnet_lite1" not in out and "espresso" in out
    assert f"error: {missing}" in err


def test_compare_keeps_unreadable_files_in_order(capsys, tmp_path):
    missing = str(tmp_path / "missing.jpg")
    code, out, _ = run(capsys, "compare", missing, COFFEE, "--models", "efficientnet_lite0", "--format", "json")
    assert code == 0
    first, second = json.loads(out)["images"]
    assert first["file"] == missing and "Could not read" in first["error"]
    assert second["consensus"] == "espresso"


def test_compare_all_bad_exits_1(capsys, bad_file):
    code, out, _ = run(capsys, "compare", bad_file, "--models", "efficientnet_lite0", "--format", "json")
    assert code == 1
    assert json.loads(out)["images"] == [{"file": bad_file, "error": json.loads(out)["images"][0]["error"]}]


def test_compare_model_without_weights_exits_2(capsys, monkeypatch):
    monkeypatch.setenv("ZOOSCOPE_OFFLINE", "1")
    code, out, err = run(capsys, "compare", COFFEE, "--models", "efficientnet_lite0,resnet18")
    assert code == 2 and out == ""
    assert "The weights for resnet18 are not on this machine" in err and "resnet18-f37072fd.pth" in err


def test_compare_unknown_model_exits_2(capsys):
    code, _, err = run(capsys, "compare", COFFEE, "--models", "efficientnet_lite0,nope")
    assert code == 2 and "There is no model called 'nope'" in err


def test_compare_empty_model_list_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["compare", COFFEE, "--models", " , "])
    assert info.value.code == 2
    assert "at least one model" in capsys.readouterr().err


def _lfw_zip(path: Path, per_class: int = 30) -> Path:
    import io
    import zipfile

    import numpy as np
    from PIL import Image
    from skimage import data as skdata

    images = skdata.lfw_subset()  # 100 faces, then 100 non-faces
    with zipfile.ZipFile(path, "w") as archive:
        for label, start in (("face", 0), ("not_face", 100)):
            for i in range(start, start + per_class):
                buffer = io.BytesIO()
                Image.fromarray((images[i] * 255).astype(np.uint8)).save(buffer, format="PNG")
                archive.writestr(f"data/{label}/{i}.png", buffer.getvalue())
    Image.fromarray((images[60] * 255).astype(np.uint8)).save(path.parent / "probe-face.png")
    return path


def test_finetune_json_then_classify_with_the_bundle(capsys, tmp_path):
    data = _lfw_zip(tmp_path / "lfw.zip")
    bundle = tmp_path / "faces.zip"
    code, out, _ = run(capsys, "finetune", str(data), "--epochs", "15", "--out", str(bundle), "--format", "json")
    assert code == 0
    report = json.loads(out)
    assert report["classes"] == ["face", "not_face"]
    assert report["train_size"] + report["val_size"] == 60 and report["val_size"] == 12
    assert report["val_accuracy"] >= 0.9 and report["epochs_run"] >= 1
    assert report["mode"] == "fast" and report["unfreeze"] == "head" and report["seconds"] > 0
    assert report["bundle"] == str(bundle) and bundle.is_file()

    code, out, _ = run(
        capsys, "classify", str(tmp_path / "probe-face.png"), "--bundle", str(bundle), "--format", "json"
    )
    assert code == 0
    (result,) = json.loads(out)
    assert result["model"] == "my model (efficientnet_lite0, 2 classes)"
    assert [p["label"] for p in result["predictions"]] == ["face", "not_face"]


def test_finetune_mode_trains_the_chosen_depth(capsys, tmp_path):
    from tests.faces import zip_of
    from tests.glyphs import glyph_pngs

    data = tmp_path / "glyphs.zip"
    data.write_bytes(zip_of({label: images for label, images in glyph_pngs(5).items() if label in "01"}))
    bundle = tmp_path / "glyphs-model.zip"
    argv = ["finetune", str(data), "--mode", "finetune", "--unfreeze", "last", "--epochs", "1", "--lr", "0.002"]
    code, out, _ = run(capsys, *argv, "--train-size", "96", "--out", str(bundle), "--format", "json")
    assert code == 0
    report = json.loads(out)
    assert (report["mode"], report["unfreeze"], report["epochs_run"]) == ("finetune", "last", 1)
    assert report["seconds"] > 0 and 0 <= report["best_epoch"] <= 1
    manifest = json.loads(zipfile.ZipFile(bundle).read("manifest.json"))
    assert manifest["training"]["lr"] == 0.002 and manifest["training"]["train_size"] == 96
    assert manifest["tuned"] in ([], ["blocks.6", "conv_head", "bn2"])  # [] when the head alone stayed best


def test_finetune_refuses_contradictory_or_invalid_settings(capsys, tmp_path):
    data = _lfw_zip(tmp_path / "lfw.zip", per_class=3)
    code, _, err = run(capsys, "finetune", str(data), "--unfreeze", "half")
    assert code == 2 and "only --mode finetune does" in err
    code, _, err = run(capsys, "finetune", str(data), "--mode", "finetune", "--lr", "-1")
    assert code == 2 and "lr must be positive" in err


def test_finetune_bad_zip_exits_2_with_message(capsys, tmp_path):
    bad = tmp_path / "photos.zip"
    bad.write_bytes(b"definitely not a zip")
    code, _, err = run(capsys, "finetune", str(bad))
    assert code == 2
    assert "not a valid zip" in err


def test_classify_with_tampered_bundle_exits_2(capsys, tmp_path, bad_file):
    bundle = tmp_path / "evil.zip"
    bundle.write_bytes(b"PK\x03\x04garbage")
    code, _, err = run(capsys, "classify", bad_file, "--bundle", str(bundle))
    assert code == 2 and "error:" in err
