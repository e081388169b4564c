"""Shipping a model variant: one self-contained .onnx, ONNX Runtime Mobile's .ort (fp32 and int8 QDQ), an
ExecuTorch .pte, each run in its own runtime against the original model's answers; the app snippets; the
errors a person sees."""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import torch.nn as nn
from onnx.external_data_helper import uses_external_data

from core.engines.onnx_export import export_module
from core.engines.quantize import quantize_int8
from core.engines.sessions import session_forward
from core.shrink import ship
from core.shrink.ship import ExecuTorchMissing, ShipFailed, verify, write_onnx, write_ort, write_pte
from core.shrink.snippets import PLACEHOLDERS, PLATFORMS, SNIPPETS, snippet

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 32
CLASSES = 10


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, CLASSES)
    ).eval()


@pytest.fixture(scope="module")
def batches() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(1, 3, SIZE, SIZE, generator=generator), torch.randn(7, 3, SIZE, SIZE, generator=generator)]


@pytest.fixture(scope="module")
def reference(model, batches) -> list[int]:
    with torch.inference_mode():
        return torch.cat([model(batch).argmax(dim=1) for batch in batches]).tolist()


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    """The export as the app makes it: weights in external data beside the .onnx."""
    path = export_module(model, SIZE, tmp_path_factory.mktemp("export") / "model.onnx")
    assert path.with_name("model.onnx.data").exists()
    return path


@pytest.fixture(scope="module")
def int8(exported, batches, tmp_path_factory):
    calibration = [image[None].numpy() for batch in batches for image in batch]
    return quantize_int8(exported, tmp_path_factory.mktemp("int8") / "int8.onnx", calibration, input_name="image")


def test_onnx_is_one_file_with_weights_and_metadata_and_agrees(exported, batches, reference, tmp_path):
    path = write_onnx(exported, tmp_path / "model.onnx", metadata={"classes": '["a", "b"]'})

    assert [item.name for item in tmp_path.iterdir()] == ["model.onnx"]
    model = onnx.load(str(path), load_external_data=False)
    assert not any(uses_external_data(tensor) for tensor in model.graph.initializer)
    assert {prop.key: prop.value for prop in model.metadata_props} == {"classes": '["a", "b"]'}
    result = verify("onnx", path, batches, reference, threads=1)
    assert (result.format, result.images, result.same_top1, result.agreement) == ("onnx", 8, 8, 1.0)
    assert result.runtime.startswith("ONNX Runtime") and result.threads == 1
    assert result.latency_ms > 0 and result.size_mb == pytest.approx(path.stat().st_size / 2**20)


def test_ort_is_an_ort_flatbuffer_that_onnx_runtime_runs(exported, batches, reference, tmp_path):
    path = write_ort(exported, tmp_path / "model.ort", metadata={"producer": "ZooScope"})

    assert [item.name for item in tmp_path.iterdir()] == ["model.ort"]  # no .config, no temporary .onnx
    assert path.read_bytes()[4:8] == b"ORTM"  # the flatbuffer's file identifier ONNX Runtime Mobile checks
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_modelmeta().custom_metadata_map == {"producer": "ZooScope"}
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert session.get_inputs()[0].shape[1:] == [3, SIZE, SIZE]
    result = verify("ort", path, batches, reference, threads=1)
    assert (result.images, result.same_top1) == (8, 8)


def test_int8_qdq_model_converts_to_ort_and_keeps_its_answers(int8, batches, tmp_path):
    assert any(node.op_type == "QuantizeLinear" for node in onnx.load(str(int8)).graph.node)
    int8_answers = torch.cat([session_forward(int8)(batch).argmax(dim=1) for batch in batches]).tolist()

    path = write_ort(int8, tmp_path / "int8.ort")

    assert path.read_bytes()[4:8] == b"ORTM"
    result = verify("ort", path, batches, int8_answers, threads=1)
    assert (result.images, result.same_top1) == (8, 8)
    assert result.size_mb > 0


def test_verify_counts_the_images_whose_top1_differs(exported, batches, reference, tmp_path):
    path = write_onnx(exported, tmp_path / "model.onnx")
    wrong = [(answer + 1) % CLASSES for answer in reference[:3]] + reference[3:]

    result = verify("onnx", path, batches, wrong, threads=1)

    assert (result.same_top1, result.agreement) == (5, 5 / 8)
    with pytest.raises(ValueError, match="8 images against 7"):
        verify("onnx", path, batches, reference[:7])


def test_pte_runs_in_executorch_with_the_models_answers(model, batches, reference, tmp_path):
    pytest.importorskip("executorch")

    path = write_pte(model, SIZE, tmp_path / "model.pte")

    assert path.read_bytes()[4:6] == b"ET"  # ExecuTorch's program identifier ("ET12" in 1.5)
    result = verify("pte", path, batches, reference)  # the batch of 7 runs image by image (static batch 1)
    assert (result.format, result.images, result.same_top1) == ("pte", 8, 8)
    assert result.runtime.startswith("ExecuTorch") and result.latency_ms > 0

    other_size = [torch.zeros(2, 3, SIZE + 8, SIZE + 8)]
    with pytest.raises(ShipFailed, match=r"could not run model\.pte .*shape \(3, 32, 32\)") as caught:
        verify("pte", path, other_size, [0, 0])
    assert "\n" not in str(caught.value)


def test_without_executorch_the_message_says_how_to_install_it(model, batches, tmp_path, monkeypatch):
    monkeypatch.setattr(ship.importlib.util, "find_spec", lambda name, *args: None)
    assert not ship.executorch_available()

    with pytest.raises(ExecuTorchMissing, match=r"pip install -r requirements-shrink\.txt"):
        write_pte(model, SIZE, tmp_path / "model.pte")
    with pytest.raises(ExecuTorchMissing, match=r"pip install -r requirements-shrink\.txt"):
        verify("pte", tmp_path / "model.pte", batches, [0] * 8)
    assert not (tmp_path / "model.pte").exists()


@pytest.mark.parametrize("format", ["onnx", "ort", "pte"])
@pytest.mark.parametrize("platform", PLATFORMS)
def test_snippets_are_filled_with_the_models_input(format, platform):
    text = snippet(format, platform, input_size=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))

    assert not any(placeholder in text for placeholder in PLACEHOLDERS)
    assert not re.search(r"\{[a-z_]+\}", text)  # closures keep their braces; no named placeholder is left
    assert "1, 3, 224, 224" in text and "224 * 224" in text and '"image"' in text
    floats = "0.485f, 0.456f, 0.406f" if platform == "android" else "0.485, 0.456, 0.406"
    assert floats in text and ("0.229f" in text) == (platform == "android")
    api = {
        ("onnx", "android"): "OrtEnvironment.getEnvironment()",
        ("ort", "android"): 'filesDir.resolve("model.ort")',
        ("pte", "android"): "Module.load(",
        ("onnx", "ios"): "ORTSession(env: env",
        ("ort", "ios"): 'ofType: "ort"',
        ("pte", "ios"): "Module(filePath:",
    }[format, platform]
    assert api in text
    assert 8 <= len(text.strip().splitlines()) <= 16


def test_snippet_refuses_unknown_format():
    assert set(SNIPPETS) == set(ship.FORMATS)
    with pytest.raises(ValueError, match="tflite"):
        snippet("tflite", "android", input_size=224, mean=(0.5,) * 3, std=(0.5,) * 3)


def test_a_corrupt_file_fails_with_a_one_line_reason(tmp_path, batches):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(np.random.default_rng(0).bytes(4096))

    errors = []
    for attempt in (
        lambda: write_onnx(broken, tmp_path / "out.onnx"),
        lambda: write_ort(broken, tmp_path / "out.ort"),
        lambda: verify("onnx", broken, batches, [0] * 8),
    ):
        with pytest.raises(ShipFailed) as caught:
            attempt()
        errors.append(str(caught.value))
    assert all("\n" not in error and "broken.onnx" in error for error in errors)
    assert errors[0].startswith("ONNX could not read broken.onnx")
    assert errors[2].startswith("ONNX Runtime") and "could not load broken.onnx" in errors[2]


def test_a_corrupt_pte_fails_with_a_one_line_reason(tmp_path, batches):
    pytest.importorskip("executorch")
    broken = tmp_path / "broken.pte"
    broken.write_bytes(b"\x00" * 64)

    with pytest.raises(ShipFailed, match=r"^ExecuTorch .* could not load broken\.pte") as caught:
        verify("pte", broken, batches, [0] * 8)
    assert "\n" not in str(caught.value)
