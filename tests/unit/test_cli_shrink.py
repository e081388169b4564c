"""`python -m core shrink`: a catalogue model and a fine-tuned bundle made smaller, every variant measured, the
JSON in the documented shape, and every exported file verified in its own runtime."""

import json
from pathlib import Path

import pytest

from core.cli import main
from core.finetune.examples import EXAMPLE_FOLDER


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def by_name(report: dict) -> dict[str, dict]:
    return {variant["variant"]: variant for variant in report["variants"]}


def test_a_catalogue_model_pruned_and_in_int8_each_measured(capsys, tmp_path):
    # No recovery here (0 epochs): distillation has its own tests (test_shrink_recover.py).
    code, out, err = run(
        capsys, "shrink", "efficientnet_lite0", "--out", str(tmp_path), "--prune", "0.5", "--int8",
        "--epochs", "0", "--format", "json",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert report["source"] == "efficientnet_lite0" and report["fidelity_kind"] == "agreement"
    assert [v["variant"] for v in report["variants"]] == ["fp32", "int8", "pruned 50%", "pruned 50% + int8"]
    fp32, int8, pruned, both = report["variants"]
    assert fp32["fidelity"] >= 0.97  # ONNX Runtime's fp32 against PyTorch's answers
    assert int8["fidelity"] >= 0.85 and int8["size_mb"] < 0.55 * fp32["size_mb"]  # the classifier stays float
    assert any("kept in float" in note for note in int8["notes"])
    assert pruned["params"] <= 0.6 * fp32["params"] and pruned["gflops"] < fp32["gflops"]
    assert any("not recovered" in note for note in pruned["notes"])
    assert both["params"] == pruned["params"] and both["size_mb"] < pruned["size_mb"]
    for variant in report["variants"]:
        assert variant["latency_ms"] > 0 and variant["latency_ms_one_thread"] > 0
        assert variant["files"] == {} and variant["verified"] == {}


@pytest.fixture(scope="module")
def textures_bundle(tmp_path_factory) -> Path:
    bundle = tmp_path_factory.mktemp("bundle") / "textures.zip"
    assert main(["finetune", str(EXAMPLE_FOLDER), "--out", str(bundle), "--format", "json"]) == 0
    return bundle


def test_a_fine_tuned_bundle_pruned_recovered_zeroed_and_shipped_in_three_runtimes(capsys, tmp_path, textures_bundle):
    pytest.importorskip("executorch")
    out_dir = tmp_path / "out"
    code, out, err = run(
        capsys, "shrink", str(textures_bundle), "--out", str(out_dir), "--recover-on", str(EXAMPLE_FOLDER),
        "--prune", "0.5", "--zeros", "--epochs", "1", "--export", "onnx,ort,pte", "--keep", "pruned 50%",
        "--format", "json",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert report["fidelity_kind"] == "accuracy" and "15 validation images" in report["images"]
    variants = by_name(report)
    assert list(variants) == ["fp32", "pruned 50%", "30% zeros"]
    fp32, pruned, zeros = variants.values()
    assert fp32["fidelity"] >= 0.9  # the head trained on these textures
    assert pruned["fidelity"] >= 0.6 and any("fine-tune on" in note for note in pruned["notes"])
    assert zeros["params"] == fp32["params"] and zeros["compressed_mb"] < 0.9 * fp32["compressed_mb"]
    assert fp32["files"] == {} and set(pruned["files"]) == {"onnx", "ort", "pte"}  # only the variant kept
    for fmt, path in pruned["files"].items():
        assert Path(path).is_file() and Path(path).suffix == f".{fmt}" and Path(path).parent == out_dir
        assert pruned["verified"][fmt] >= 0.9, fmt  # run in its own runtime, against the variant's answers here
    assert Path(pruned["files"]["ort"]).read_bytes()[4:8] == b"ORTM"


def test_a_bundle_without_its_images_and_bad_arguments_are_one_line_errors(capsys, tmp_path):
    bundle = tmp_path / "my-model.zip"
    bundle.write_bytes(b"PK\x05\x06" + bytes(18))  # refused before it is read
    code, _, err = run(capsys, "shrink", str(bundle), "--out", str(tmp_path))
    assert code == 2 and "--recover-on DATA" in err and "Traceback" not in err
    code, _, err = run(
        capsys, "shrink", "efficientnet_lite0", "--out", str(tmp_path), "--holdout", str(tmp_path / "no")
    )
    assert code == 2 and "is not a folder of photos" in err
    with pytest.raises(SystemExit):
        main(["shrink", "efficientnet_lite0", "--out", str(tmp_path), "--prune", "1.5"])
    with pytest.raises(SystemExit):
        main(["shrink", "efficientnet_lite0", "--out", str(tmp_path), "--export", "tflite"])
