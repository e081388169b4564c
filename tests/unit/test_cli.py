"""`python -m core ...` run in-process: exit codes, JSON schemas, messages on stderr."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from core.__main__ import main
from tests.cli import run

EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"
COFFEE, CHELSEA = str(EXAMPLES / "coffee.jpg"), str(EXAMPLES / "chelsea.jpg")
LITE = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
CATS = {"tabby", "tiger cat", "Egyptian cat"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
    assert set(good) == {"file", "model", "runtime", "predictions", "latency_ms"}
    assert good["file"] == COFFEE and good["model"] == "efficientnet_lite0"
    assert good["runtime"] == "onnx"  # auto on the CPU: ONNX Runtime, its export verified
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


@pytest.mark.parametrize("runtime", ["torch", "onnx", "int8"])
def test_classify_runs_in_the_runtime_asked_for(capsys, runtime):
    code, out, _ = run(capsys, "classify", COFFEE, "--runtime", runtime, "--format", "json")
    assert code == 0
    (result,) = json.loads(out)
    assert result["runtime"] == runtime and result["predictions"][0]["label"] == "espresso"
    assert result["model"] == ("efficientnet_lite0 · int8" if runtime == "int8" else "efficientnet_lite0")


def test_the_environment_chooses_the_runtime_when_the_option_does_not(capsys, monkeypatch):
    monkeypatch.setenv("ZOOSCOPE_RUNTIME", "torch")
    code, out, _ = run(capsys, "classify", COFFEE, "--format", "json")
    assert code == 0 and json.loads(out)[0]["runtime"] == "torch"
    code, out, _ = run(capsys, "classify", COFFEE, "--format", "json", "--runtime", "onnx")
    assert code == 0 and json.loads(out)[0]["runtime"] == "onnx"  # the option wins


@pytest.mark.parametrize("command", ["classify", "compare", "finetune"])
def test_an_unknown_runtime_is_a_one_line_error_listing_the_choices(capsys, command):
    code, out, err = run(capsys, command, COFFEE, "--runtime", "tensorrt")
    assert code == 2 and out == ""
    assert err == "error: unknown runtime 'tensorrt'; choose one of auto, torch, onnx, int8\n"


def test_classify_table_names_the_runtime(capsys):
    code, out, _ = run(capsys, "classify", COFFEE, "--runtime", "torch")
    assert code == 0 and "(efficientnet_lite0, PyTorch, " in out


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
        assert set(model) == {"name", "runtime", "latency_ms", "agreement", "acc1", "params", "gflops", "size_mb"}
        assert model["latency_ms"] > 0 and isinstance(model["params"], int)
        assert model["runtime"] == "onnx" and model["agreement"] == 1.0
    coffee, bad, chelsea = report["images"]
    assert set(coffee) == {"file", "results", "top1_agree", "consensus"}
    assert coffee["file"] == COFFEE and coffee["consensus"] == "espresso" and coffee["top1_agree"] is True
    assert list(coffee["results"]) == LITE
    for rows in coffee["results"].values():
        assert len(rows) == 3 and rows[0] == {"label": "espresso", "probability": rows[0]["probability"]}
    assert bad["file"] == bad_file and set(bad) == {"file", "error"}
    assert chelsea["consensus"] in CATS
    assert f"error: {bad_file}" in err


def test_compare_puts_int8_beside_fp32(capsys):
    models = "efficientnet_lite0,efficientnet_lite0 · int8"
    code, out, _ = run(capsys, "compare", COFFEE, "--models", models, "--format", "json")
    assert code == 0
    fp32, int8 = json.loads(out)["models"]
    assert (fp32["name"], fp32["runtime"], fp32["agreement"]) == ("efficientnet_lite0", "onnx", 1.0)
    assert (int8["name"], int8["runtime"]) == ("efficientnet_lite0 · int8", "int8")
    assert 0 < int8["agreement"] <= 1 and int8["size_mb"] < fp32["size_mb"] / 3


def test_compare_in_pytorch(capsys):
    code, out, _ = run(capsys, "compare", COFFEE, "--models", "efficientnet_lite0", "--runtime", "torch")
    assert code == 0 and " torch " in out.splitlines()[1]


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


def test_finetune_the_example_folder_then_classify_honours_the_threshold(capsys, tmp_path):
    from core.finetune.examples import EXAMPLE_FOLDER
    from core.finetune.threshold import NOT_SURE

    bundle = tmp_path / "textures.zip"
    code, out, _ = run(capsys, "finetune", str(EXAMPLE_FOLDER), "--out", str(bundle), "--format", "json")
    assert code == 0
    report = json.loads(out)
    assert report["classes"] == ["brick", "grass", "gravel"] and report["val_size"] == 15
    assert report["val_accuracy"] >= 0.9
    threshold = report["threshold"]
    assert 1 / 3 <= threshold <= 0.9

    grass = str(EXAMPLE_FOLDER / "grass" / "grass_00.png")
    code, out, _ = run(capsys, "classify", grass, CHELSEA, "--bundle", str(bundle), "--format", "json")
    assert code == 0
    by_file = {result["file"]: result for result in json.loads(out)}
    for result in by_file.values():
        assert result["threshold"] == threshold
        assert result["below_threshold"] == (result["predictions"][0]["probability"] < threshold)
    assert by_file[grass]["predictions"][0]["label"] == "grass" and not by_file[grass]["below_threshold"]
    # A cat is none of brick, grass, gravel: not sure, because it is unlike every training image.
    assert by_file[grass]["not_sure"] is False and by_file[grass]["not_sure_why"] is None
    assert by_file[CHELSEA]["not_sure"] is True and by_file[CHELSEA]["not_sure_why"] == "unlike_training"
    assert by_file[CHELSEA]["similarity"] < by_file[CHELSEA]["min_similarity"] == report["min_similarity"]

    # --threshold overrides the bundle's: at 1.0 nothing is sure, and the table says so.
    code, out, _ = run(capsys, "classify", grass, "--bundle", str(bundle), "--threshold", "1")
    assert code == 0 and f"{NOT_SURE} (top-1" in out and "below the threshold 100.00%" in out
    code, out, _ = run(capsys, "classify", grass, "--bundle", str(bundle), "--threshold", "0", "--format", "csv")
    assert (
        out.splitlines()[0].endswith("threshold,below_threshold,not_sure,not_sure_why") and ",0.0,False,False," in out
    )


def test_threshold_without_a_bundle_exits_2(capsys):
    code, _, err = run(capsys, "classify", COFFEE, "--threshold", "0.5")
    assert code == 2 and err.strip() == "error: --threshold applies to a fine-tuned model: give it with --bundle."


def test_threshold_out_of_range_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["classify", COFFEE, "--bundle", "b.zip", "--threshold", "1.5"])
    assert info.value.code == 2
    assert "threshold must be from 0 to 1" in capsys.readouterr().err


# --- inspect --------------------------------------------------------------------------------------


def test_inspect_json_needs_no_weights(capsys):
    from core.models.catalog import get_spec

    code, out, err = run(capsys, "inspect", "resnet50", "--format", "json")
    assert code == 0 and err == ""
    report = json.loads(out)
    assert {"model", "family", "input_size", "params", "gflops", "skip_connections", "stages"} <= set(report)
    assert report["model"] == "resnet50" and report["params"] == get_spec("resnet50").num_params
    assert report["skip_connections"] == 16 and report["input_size"] == 224
    assert [stage["name"] for stage in report["stages"]] == ["maxpool", "layer1", "layer2", "layer3", "layer4"]
    layer4 = report["stages"][-1]
    assert {"name", "kind", "output_shape", "params", "gflops"} <= set(layer4)
    assert layer4["output_shape"] == [2048, 7, 7] and layer4["receptive_field"] == 427
    total = sum(stage["params"] for stage in report["stages"]) + report["head"]["params"]
    assert total == report["params"]


def test_inspect_json_says_what_each_depth_would_train(capsys):
    code, out, err = run(capsys, "inspect", "vit_b_16", "--format", "json")
    assert code == 0 and err == ""
    report = json.loads(out)
    unfreeze = report["unfreeze"]
    assert list(unfreeze) == ["head", "last", "half", "all"]
    # The backbone's parameters only (the new head's size depends on the person's classes), read off
    # the same model's anatomy: the last encoder layer and the final LayerNorm; everything but the
    # class token and the replaced Linear; and about half of that (six of the twelve layers).
    width = report["stages"][-1]["output_shape"][-1]
    assert unfreeze["last"] == report["stages"][-1]["blocks"][-1]["params"] + 2 * width
    assert unfreeze["all"] == report["params"] - width - (width * 1000 + 1000)
    assert unfreeze["half"] == 6 * report["stages"][-1]["blocks"][-1]["params"] + 2 * width
    assert unfreeze["head"] == 0

    code, out, _ = run(capsys, "inspect", "squeezenet1_1", "--format", "json")
    assert code == 0 and json.loads(out)["unfreeze"] == dict.fromkeys(unfreeze)  # no Linear head: nothing


def test_inspect_table(capsys):
    code, out, _ = run(capsys, "inspect", "vgg16")
    assert code == 0
    first, *table = out.splitlines()
    assert first.startswith("vgg16 (vgg): 138,357,544 parameters, 15.47 GFLOPS at 224 x 224, 0 skip connections")
    assert "receptive_field" in table[0] and "212 px" in out


def test_inspect_unknown_model_names_the_closest(capsys):
    code, out, err = run(capsys, "inspect", "resnet5")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "Closest: resnet50" in err


def test_inspect_save_maps(capsys, tmp_path):
    import numpy as np

    from core.inside.anatomy import anatomy

    path = tmp_path / "maps.npz"
    code, out, err = run(capsys, "inspect", "efficientnet_lite0", "--image", CHELSEA, "--save-maps", str(path))
    assert code == 0 and f"written to {path}" in out
    stages = anatomy("efficientnet_lite0").stages
    with np.load(path) as maps:
        assert maps.files == ["input", *[stage.name for stage in stages]]  # network order
        assert maps["input"].shape == (224, 224, 3) and maps["input"].dtype == np.uint8
        for stage in stages:
            assert maps[stage.name].shape == stage.grid and maps[stage.name].dtype == np.float32


def test_inspect_save_maps_of_a_token_model_on_the_patch_grid(capsys, tmp_path, monkeypatch):
    import numpy as np

    from tests.unit.test_explain import random_loaded

    # ViT-B/16's architecture with random weights in place of the download.
    monkeypatch.setattr("core.cli.catalogue.load_model", lambda name, device: random_loaded(name))
    path = tmp_path / "vit.npz"
    code, _, _ = run(capsys, "inspect", "vit_b_16", "--image", COFFEE, "--save-maps", str(path), "--format", "json")
    assert code == 0
    with np.load(path) as maps:
        assert [maps[key].shape for key in maps.files[1:]] == [(14, 14)] * 5  # class token dropped


def test_inspect_image_without_weights_names_the_file_and_folder(capsys, tmp_path, monkeypatch):
    from core.models.catalog import get_spec

    monkeypatch.setenv("ZOOSCOPE_OFFLINE", "1")
    code, out, err = run(capsys, "inspect", "resnet50", "--image", CHELSEA, "--save-maps", str(tmp_path / "m.npz"))
    assert code == 2 and out == ""
    assert get_spec("resnet50").file_name in err and "checkpoints" in err and err.count("\n") == 1
    assert not (tmp_path / "m.npz").exists()


def test_inspect_bad_image_and_bad_options(capsys, bad_file, tmp_path):
    code, _, err = run(
        capsys, "inspect", "efficientnet_lite0", "--image", bad_file, "--save-maps", str(tmp_path / "m.npz")
    )
    assert code == 2 and bad_file in err and "not an image" in err and err.count("\n") == 1
    code, _, err = run(capsys, "inspect", "efficientnet_lite0", "--image", str(tmp_path / "missing.jpg"),
                       "--save-maps", str(tmp_path / "m.npz"))  # fmt: skip
    assert code == 2 and "missing.jpg" in err
    code, _, err = run(capsys, "inspect", "efficientnet_lite0", "--image", CHELSEA)
    assert code == 2 and "--save-maps" in err
