"""One model handle: the key a model is asked for by, the handle's two faces, and the label made from a key."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch

from core import runtime
from core.classify.classifier import Classifier
from core.classify.predict import classify_files, preprocess, probabilities
from core.cli.common import model_key
from core.engines.handle import ModelHandle, PyTorchEngine
from core.images import decode_image
from core.models import fallback
from core.models.keys import ModelKey
from tests.hostile import example

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- the key --------------------------------------------------------------------------------------


def test_a_key_is_a_name_and_an_engine_and_its_label_is_made_from_it():
    assert ModelKey("resnet50").label == str(ModelKey("resnet50")) == "resnet50"
    assert ModelKey("resnet50", "int8").label == str(ModelKey("resnet50", "int8")) == "resnet50 · int8"
    assert ModelKey("resnet50", "onnx").label == "resnet50"  # fp32 in ONNX Runtime answers as PyTorch does
    assert (ModelKey("resnet50").slug, ModelKey("resnet50", "int8").slug) == ("resnet50", "resnet50-int8")
    assert ModelKey("resnet50", "int8") == ModelKey("resnet50", "int8") != ModelKey("resnet50")
    assert len({ModelKey("resnet50"), ModelKey("resnet50", "int8"), ModelKey("resnet50")}) == 2


def test_a_key_refuses_an_engine_this_app_does_not_have():
    with pytest.raises(ValueError, match="engine must be one of"):
        ModelKey("resnet50", "fp16")


def test_the_command_line_finds_a_variant_by_its_label_without_splitting_it():
    assert model_key("efficientnet_lite0 · int8") == ModelKey("efficientnet_lite0", "int8")
    assert model_key("efficientnet_lite0") == ModelKey("efficientnet_lite0")
    assert model_key("resnet50 · fp16") == ModelKey("resnet50 · fp16")  # no such model: loading says so


def test_a_missing_variant_gives_its_place_to_a_bundled_key(tmp_path):
    chosen = [ModelKey("resnet50", "int8"), ModelKey("efficientnet_lite0")]
    plan = fallback.plan_models(
        chosen,
        can_download=False,
        is_available=lambda key: key.name.startswith("efficientnet_lite"),
        stand_ins=[ModelKey(name) for name in ("efficientnet_lite0", "efficientnet_lite1")],
    )
    assert plan.run == (ModelKey("efficientnet_lite1"), ModelKey("efficientnet_lite0"))
    assert plan.missing == [ModelKey("resnet50", "int8")]
    note = fallback.fallback_note(plan, offline_flag=True, folder=tmp_path)
    assert "`resnet50 · int8`" in note and "resnet50-" in note  # resnet50's own weights file is what is missing


# --- the handle -----------------------------------------------------------------------------------


def test_a_pytorch_handle_classifies_as_its_torch_face_does(lite0):
    handle = ModelHandle.in_pytorch(lite0)
    assert isinstance(handle, Classifier) and isinstance(handle.inference, PyTorchEngine)
    assert handle.torch is lite0 and handle.spec is lite0.spec and handle.preprocess is lite0.preprocess
    assert (handle.name, handle.runtime, handle.precision) == ("efficientnet_lite0", "torch", "fp32")
    assert handle.agreement is None  # nothing to agree with: it is PyTorch fp32 itself
    assert handle.memory_mb == lite0.memory_mb and handle.file_size_mb == lite0.file_size_mb
    assert handle.int8_verdict() == (False, "")
    batch = preprocess(handle, [decode_image(_coffee())])
    assert torch.equal(probabilities(handle, batch), probabilities(lite0, batch))


def test_the_handle_does_not_imitate_its_torch_face(lite0):
    """What needs PyTorch asks for `handle.torch`: the handle has no module of its own."""
    handle = ModelHandle.in_pytorch(lite0)
    assert not hasattr(handle, "module")


@dataclass(frozen=True)
class FakeInt8:
    """An inference face with int8 measurements, as core.engines.onnx_engine.OnnxEngine reports them."""

    report: dict = field(default_factory=lambda: {"images": 40, "same_top1": 39, "int8_ms": 2.0, "fp32_ms": 5.0})
    runtime: str = "int8"
    device: torch.device = torch.device("cpu")
    precision: str = "int8"
    channels_last: bool = False
    memory_mb: float = 4.0
    file_size_mb: float = 4.0

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(batch), 1000)


def test_an_int8_handle_is_named_by_its_engine_and_judged_by_its_measurements(lite0):
    handle = ModelHandle(lite0, FakeInt8(), note="measured")
    assert handle.name == "efficientnet_lite0 · int8" and handle.memory_mb == 4.0
    assert handle.agreement == pytest.approx(39 / 40)
    assert handle.int8_verdict() == runtime.int8_verdict(39 / 40, 2.0, 5.0)
    assert handle.forward(torch.zeros(2, 3, 224, 224)).shape == (2, 1000)  # the inference face runs it
    assert classify_files(handle, [("coffee.jpg", _coffee())], k=1)[0].model == "efficientnet_lite0 · int8"


def _coffee() -> bytes:
    return example("coffee.jpg")
