"""The GPU path (channels-last CNNs, pinned inputs, bf16 autocast behind a check), tested on the CPU
wherever the logic allows: the decisions with a fake device and a fake agreement, the bf16 check
with CPU autocast on the real offline model, and CPU predictions unchanged. Tests that need CUDA
are marked and skipped without it."""

from __future__ import annotations

import contextlib
import copy
import logging

import pytest
import torch
import torchvision
from PIL import Image

from core import runtime
from core.classify import predict
from core.classify.predict import classify_images, preprocess, probabilities
from core.datasets.check_images import check_images
from core.models import precision_check, weights
from core.models.building import build_model, read_state_dict
from core.models.catalog import all_specs
from core.models.families import FAMILIES, traits
from core.models.loading import LoadedModel, load_model, warm_up
from core.models.precision_check import bf16_agreement, bf16_check
from core.preprocessing import model_batch
from core.runtime import AGREEMENT_GOAL, requested_precision, resolve_precision, use_channels_last

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CUDA = torch.device("cuda")  # a device object needs no GPU: only the decisions use it
CPU = torch.device("cpu")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU with CUDA")


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    return check_images()


def never(*_: object) -> float:
    raise AssertionError("the agreement check must not run for this decision")


# --- precision: environment ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, "auto"),
        ("", "auto"),
        ("auto", "auto"),
        ("fp32", "fp32"),
        ("FP32", "fp32"),
        ("float32", "fp32"),
        ("bf16", "bf16"),
        (" bfloat16 ", "bf16"),
    ],
)
def test_requested_precision(raw: str | None, expected: str):
    env = {} if raw is None else {"ZOOSCOPE_PRECISION": raw}
    assert requested_precision(env) == expected


@pytest.mark.parametrize("raw", ["fp16", "half", "int8", "yes"])
def test_unknown_precision_warns_and_means_auto(raw: str, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger="core.runtime"):
        assert requested_precision({"ZOOSCOPE_PRECISION": raw}) == "auto"
    assert "ZOOSCOPE_PRECISION" in caplog.text


# --- precision: the one decision ----------------------------------------------------------------


def test_auto_on_cpu_is_fp32_without_running_the_check():
    assert resolve_precision("auto", CPU, agreement=never, bf16_supported=lambda: True) == "fp32"


@pytest.mark.parametrize(("agreement", "expected"), [(1.0, "bf16"), (0.995, "bf16"), (0.99, "bf16"), (0.98, "fp32")])
def test_auto_on_cuda_follows_the_check(agreement: float, expected: str):
    decided = resolve_precision("auto", CUDA, agreement=lambda: agreement, bf16_supported=lambda: True)
    assert decided == expected
    assert AGREEMENT_GOAL == 0.99


def test_auto_on_cuda_without_bf16_support_is_fp32():
    assert resolve_precision("auto", CUDA, agreement=never, bf16_supported=lambda: False) == "fp32"


@pytest.mark.parametrize("family", sorted(name for name, row in FAMILIES.items() if row.bf16_slow))
def test_auto_keeps_families_that_bf16_slows_in_fp32(family: str):
    assert runtime.model_precision(traits(family), CUDA, "auto", agreement=never) == "fp32"


def test_depthwise_families_are_the_slow_ones():
    slow = {name for name, row in FAMILIES.items() if row.bf16_slow}
    assert slow == {"efficientnet", "efficientnet_lite", "mnasnet", "mobilenet_v2", "mobilenet_v3"}


@pytest.mark.parametrize("device", [CPU, CUDA])
def test_fp32_is_fp32_everywhere(device: torch.device):
    assert resolve_precision("fp32", device, agreement=never, bf16_supported=lambda: True) == "fp32"


@pytest.mark.parametrize("device", [CPU, CUDA])
def test_explicit_bf16_needs_no_check(device: torch.device):
    assert resolve_precision("bf16", device, agreement=never, bf16_supported=lambda: True) == "bf16"


def test_explicit_bf16_falls_back_where_unsupported(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger="core.runtime"):
        decided = resolve_precision("bf16", CUDA, agreement=never, bf16_supported=lambda: False)
    assert decided == "fp32"
    assert "does not support" in caplog.text


def test_resolve_rejects_unknown_precision():
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16", CPU, agreement=never)


def test_model_precision_reads_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ZOOSCOPE_PRECISION", "bf16")
    resnet = traits("resnet")
    assert runtime.model_precision(resnet, CPU, agreement=never) == "bf16"
    monkeypatch.setenv("ZOOSCOPE_PRECISION", "auto")
    assert runtime.model_precision(resnet, CPU, agreement=never) == "fp32"
    assert runtime.model_precision(resnet, CPU, "bf16", agreement=never) == "bf16"  # an explicit argument wins


@pytest.fixture
def fresh_check_cache(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(precision_check, "_cache", {})


def test_bf16_check_runs_once_per_process(monkeypatch: pytest.MonkeyPatch, fresh_check_cache):
    runs = []
    monkeypatch.setattr(precision_check, "bf16_agreement", lambda model, images: runs.append(len(images)) or 0.995)
    monkeypatch.setattr(precision_check, "_reference", lambda device: device)
    assert bf16_check(CPU) == 0.995
    assert bf16_check("cpu") == 0.995
    assert runs == [len(check_images())]


def test_bf16_check_that_fails_means_fp32(monkeypatch: pytest.MonkeyPatch, fresh_check_cache, caplog):
    def broken(*_: object, **__: object):
        raise OSError("no such file")

    monkeypatch.setattr(precision_check, "_reference", broken)
    with caplog.at_level(logging.WARNING, logger="core.models.precision_check"):
        assert bf16_check(CPU) == 0.0
    assert "could not run" in caplog.text
    decided = resolve_precision("auto", CUDA, agreement=lambda: bf16_check(CPU), bf16_supported=lambda: True)
    assert decided == "fp32"


def test_autocast_context():
    with runtime.autocast(CPU, "bf16"):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
    assert isinstance(runtime.autocast(CPU, "fp32"), contextlib.nullcontext)
    with pytest.raises(ValueError):
        runtime.autocast(CPU, "fp16")


# --- the bf16 check on real photos (CPU autocast) --------------------------------------------------


def test_agreement_images_are_real_photos_and_deterministic_variations(photos: list[Image.Image]):
    assert len(photos) == 3 * 13  # chelsea, coffee, rocket
    assert all(image.mode == "RGB" for image in photos)
    again = check_images()
    assert [image.tobytes() for image in again] == [image.tobytes() for image in photos]


def test_bf16_agreement_on_cpu(lite0: LoadedModel, photos: list[Image.Image]):
    agreement = bf16_agreement(lite0, photos)
    assert 0.0 <= agreement <= 1.0
    assert agreement * len(photos) == round(agreement * len(photos))  # a share of whole images
    # CPU bf16 autocast differs from fp32 only on near ties (tabby vs tiger cat on the cat crops).
    assert agreement >= 0.9


def test_bf16_agreement_of_a_model_with_itself_in_fp32_would_be_one(lite0: LoadedModel, photos):
    """The check compares a bf16 forward against an fp32 one, whatever precision the model has."""
    as_bf16 = LoadedModel(lite0.spec, lite0.module, lite0.preprocess, lite0.device, precision="bf16")
    assert bf16_agreement(as_bf16, photos[:4]) == bf16_agreement(lite0, photos[:4])


def test_bf16_agreement_needs_images(lite0: LoadedModel):
    with pytest.raises(ValueError):
        bf16_agreement(lite0, [])


# --- channels-last -------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["resnet", "vgg", "efficientnet", "efficientnet_lite", "mobilenet_v3", "convnext"])
def test_cnns_go_channels_last_on_cuda_only(family: str):
    assert use_channels_last(traits(family), CUDA)
    assert use_channels_last(traits(family), "cuda:0")
    assert not use_channels_last(traits(family), CPU)


@pytest.mark.parametrize("family", ["vit", "swin", "maxvit", "some_new_family"])
def test_transformers_and_unknown_families_stay_as_they_are(family: str):
    assert not use_channels_last(traits(family), CUDA)


def test_every_catalogue_family_is_decided():
    """A new family must be put on one side on purpose: it gets its own row in the family table."""
    families = {spec.family for spec in all_specs().values()}
    assert families <= set(FAMILIES), families - set(FAMILIES)
    assert {name for name, row in FAMILIES.items() if not row.channels_last} == {"vit", "swin", "maxvit"}


@pytest.mark.parametrize("which", ["resnet18", "efficientnet_lite0"])
def test_channels_last_weights_give_the_same_logits(which: str, lite0: LoadedModel):
    """What load_model does to a CNN on CUDA (module.to(memory_format=channels_last)), on the CPU."""
    torch.manual_seed(0)
    module = torchvision.models.resnet18(weights=None).eval() if which == "resnet18" else lite0.module
    converted = copy.deepcopy(module).to(memory_format=torch.channels_last)
    weight = next(p for p in converted.parameters() if p.dim() == 4)
    assert weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        expected = module(x)
        actual = converted(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)


def test_warm_up_runs_in_the_layout_and_precision_requested(lite0: LoadedModel):
    seen = []

    def record(module: torch.nn.Module, args: tuple) -> None:
        seen.append((args[0].is_contiguous(memory_format=torch.channels_last), torch.is_autocast_enabled("cpu")))

    handle = lite0.module.conv_stem.register_forward_pre_hook(record)
    try:
        warm_up(lite0.module, 224, CPU, precision="bf16", channels_last=True)
        warm_up(lite0.module, 224, CPU)
    finally:
        handle.remove()
    assert seen == [(True, True), (False, False)]


# --- the CPU path is unchanged -------------------------------------------------------------------


def test_cpu_load_is_fp32_and_contiguous(lite0: LoadedModel):
    assert lite0.precision == "fp32"
    assert lite0.channels_last is False
    # The weights keep the layout they have in the file (the lite files store TF's transposed one).
    fresh = build_model(lite0.spec, read_state_dict(weights.resolve(lite0.spec)))
    assert [p.stride() for p in lite0.module.parameters()] == [p.stride() for p in fresh.parameters()]


def test_cpu_probabilities_equal_a_direct_forward(lite0: LoadedModel, photos: list[Image.Image]):
    images = photos[:5]
    batch = model_batch(images, lite0.preprocess)
    with torch.inference_mode():
        expected = lite0.module(batch).softmax(dim=1)
    assert torch.equal(preprocess(lite0, images), batch)
    assert torch.equal(probabilities(lite0, batch), expected)
    results = classify_images(lite0, images, [f"{i}.jpg" for i in range(5)], k=1)
    assert [r.top1.class_index for r in results] == expected.argmax(dim=1).tolist()


def test_device_preprocessing_matches_the_pil_path(lite0: LoadedModel, photos: list[Image.Image]):
    """What preprocess does on CUDA (torchvision's transform on uint8 tensors), run on the CPU."""
    tensor_path = predict.preprocess_on_device(lite0, photos, "cpu")
    pil_path = preprocess(lite0, photos)
    assert tensor_path.shape == pil_path.shape and tensor_path.dtype == pil_path.dtype
    assert (tensor_path - pil_path).abs().mean() < 0.01  # resize rounding only (inputs span [-1, 1])
    assert (
        probabilities(lite0, tensor_path).argmax(dim=1).tolist()
        == probabilities(lite0, pil_path).argmax(dim=1).tolist()
    )


def test_device_preprocessing_takes_any_mode(lite0: LoadedModel, photos: list[Image.Image]):
    grey = photos[0].convert("L")
    torch.testing.assert_close(
        predict.preprocess_on_device(lite0, [grey], "cpu"),
        predict.preprocess_on_device(lite0, [grey.convert("RGB")], "cpu"),
    )


def test_bf16_on_cpu_when_asked_gives_float32_probabilities_and_the_same_answers(lite0, photos):
    as_bf16 = LoadedModel(lite0.spec, lite0.module, lite0.preprocess, lite0.device, precision="bf16")
    rocket = photos[-13:-11]  # rocket and its mirror image: clear answers, far from any tie
    batch = preprocess(lite0, rocket)
    fp32, bf16 = probabilities(lite0, batch), probabilities(as_bf16, batch)
    assert bf16.dtype == torch.float32
    torch.testing.assert_close(bf16.sum(dim=1), torch.ones(len(rocket)))
    assert bf16.argmax(dim=1).tolist() == fp32.argmax(dim=1).tolist()
    assert not torch.equal(bf16, fp32)  # it really ran in bf16


def test_load_model_takes_a_precision(monkeypatch: pytest.MonkeyPatch):
    assert load_model("efficientnet_lite0", precision="bf16").precision == "bf16"
    monkeypatch.setenv("ZOOSCOPE_PRECISION", "bf16")
    assert load_model("efficientnet_lite0").precision == "bf16"
    monkeypatch.setenv("ZOOSCOPE_PRECISION", "auto")
    assert load_model("efficientnet_lite0").precision == "fp32"


# --- on a real GPU ------------------------------------------------------------------------------


@needs_cuda
def test_cuda_load_moves_a_cnn_channels_last_once():
    model = load_model("efficientnet_lite0", "cuda", precision="fp32")
    assert model.device.type == "cuda" and model.channels_last
    weight = model.module.conv_stem.weight
    assert weight.is_cuda and weight.is_contiguous(memory_format=torch.channels_last)


@needs_cuda
def test_cuda_preprocessing_runs_on_the_gpu_and_agrees_with_the_cpu(lite0: LoadedModel, photos: list[Image.Image]):
    model = load_model("efficientnet_lite0", "cuda", precision="fp32")
    batch = preprocess(model, photos)
    assert batch.is_cuda and batch.shape == (len(photos), 3, 224, 224)
    on_gpu = probabilities(model, batch)
    on_cpu = probabilities(lite0, preprocess(lite0, photos))
    assert on_gpu.device.type == "cpu"
    assert on_gpu.argmax(dim=1).tolist() == on_cpu.argmax(dim=1).tolist()
    torch.testing.assert_close(on_gpu, on_cpu, rtol=0, atol=0.05)


@needs_cuda
def test_cuda_takes_a_cpu_batch_too(lite0: LoadedModel, photos: list[Image.Image]):
    """A batch made on the CPU (core.classify.compare's helper thread, old callers) is pinned and moved once."""
    model = load_model("efficientnet_lite0", "cuda", precision="fp32")
    cpu_batch = preprocess(lite0, photos[:4])
    torch.testing.assert_close(probabilities(model, cpu_batch), probabilities(lite0, cpu_batch), rtol=1e-3, atol=1e-4)


@needs_cuda
def test_cuda_bf16_check_and_auto_decision():
    agreement = bf16_check("cuda")
    assert 0.0 <= agreement <= 1.0
    resnet_precision = runtime.model_precision(traits("resnet"), "cuda", "auto", agreement=lambda: bf16_check("cuda"))
    assert resnet_precision == ("bf16" if agreement >= AGREEMENT_GOAL and torch.cuda.is_bf16_supported() else "fp32")
