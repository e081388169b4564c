"""The catalogue's metadata schema over every entry (after torchvision's test_extended_models.py)."""

from __future__ import annotations

import os

import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models import list_models

from core.errors import UnknownModel, ZooScopeError
from core.models import catalog, weights
from core.models.catalog import CURATED, OFFLINE_DEFAULT, all_specs, curated_specs, get_spec

ALL_NAMES = sorted(all_specs())
TORCHVISION_NAMES = sorted(list_models(module=torchvision.models))
REQUIRED_CURATED = {
    "resnet18",
    "resnet50",
    "vgg16",
    "efficientnet_b0",
    "efficientnet_v2_s",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "vit_b_16",
    "convnext_tiny",
    "efficientnet_lite0",
}
# Small enough to build with random init in well under a second each.
SMALL = ("resnet18", "mobilenet_v3_small", "squeezenet1_0", "shufflenet_v2_x0_5", "efficientnet_lite0")
BUNDLED_NAMES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
# (crop, resize) of the TF lite preprocessing, from timm's pretrained configs.
LITE_SIZES = {"efficientnet_lite0": (224, 256), "efficientnet_lite1": (240, 272), "efficientnet_lite2": (260, 292)}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_catalogue_is_torchvision_registry_plus_bundled():
    assert len(TORCHVISION_NAMES) == 80
    assert ALL_NAMES == sorted([*TORCHVISION_NAMES, *BUNDLED_NAMES])
    sources = {name: spec.source for name, spec in all_specs().items()}
    assert {sources.pop(name) for name in BUNDLED_NAMES} == {"bundled"}
    assert set(sources.values()) == {"torchvision"}


@pytest.mark.parametrize("name", ALL_NAMES)
def test_spec_schema(name):
    spec = get_spec(name)
    assert spec.name == name

    categories = spec.categories
    assert isinstance(categories, list) and len(categories) == 1000
    assert len(set(categories)) == 1000
    assert all(isinstance(c, str) and c for c in categories)

    assert 0 < spec.acc1 <= 100 and 0 < spec.acc5 <= 100
    assert spec.acc5 >= spec.acc1
    assert isinstance(spec.num_params, int) and not isinstance(spec.num_params, bool) and spec.num_params > 0
    assert spec.gflops > 0
    assert spec.file_size_mb > 0
    assert spec.input_size >= 224
    assert isinstance(spec.weights_id, str) and spec.weights_id
    assert isinstance(spec.family, str) and spec.family
    assert callable(spec.transforms())

    # torchvision-style file names carry a SHA-256 prefix that core.models.weights verifies against.
    prefix = weights.expected_hash_prefix(spec.file_name)
    assert prefix is not None and len(prefix) >= 8, spec.file_name
    assert spec.file_name.endswith(".pth")

    row = spec.row()
    assert row["name"] == name and row["input_size"] == spec.input_size
    assert row["params_m"] == round(spec.num_params / 1e6, 2)


@pytest.mark.parametrize("name", TORCHVISION_NAMES)
def test_torchvision_specs_use_default_weights(name):
    spec = get_spec(name)
    assert spec.weights is torchvision.models.get_model_weights(name).DEFAULT
    assert spec.weights_id == str(spec.weights)
    assert spec.build_kwargs["num_classes"] == 1000


def test_families_are_friendly():
    assert get_spec("vit_b_16").family == "vit"
    assert get_spec("mobilenet_v3_large").family == "mobilenet_v3"
    assert get_spec("resnet50").family == "resnet"
    assert get_spec("efficientnet_lite0").family == "efficientnet_lite"


def test_curated():
    assert len(set(CURATED)) == len(CURATED)
    assert REQUIRED_CURATED <= set(CURATED)
    assert set(CURATED) <= set(ALL_NAMES)
    assert [spec.name for spec in curated_specs()] == list(CURATED)
    assert OFFLINE_DEFAULT in CURATED and get_spec(OFFLINE_DEFAULT).source == "bundled"


@pytest.mark.parametrize("name", SMALL)
def test_num_params_matches_built_model(name):
    spec = get_spec(name)
    with torch.device("meta"):  # shapes only: no init cost
        model = spec.build()
    assert sum(p.numel() for p in model.parameters()) == spec.num_params


@pytest.mark.parametrize("name", BUNDLED_NAMES)
def test_bundled_declared_params_and_gflops_match_the_model(name):
    spec = get_spec(name)
    model = spec.build().eval()
    assert sum(p.numel() for p in model.parameters()) == spec.num_params
    size = spec.input_size
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.zeros(1, 3, size, size))
    # FlopCounterMode counts a multiply-add as 2 FLOPs; torchvision's _ops are multiply-adds.
    assert round(counter.get_total_flops() / 2e9, 2) == round(spec.gflops, 2)


@pytest.mark.parametrize("name", BUNDLED_NAMES)
def test_bundled_declared_file_size_matches_package_file(name):
    spec = get_spec(name)
    path = weights.find_local(spec)
    assert path is not None and path.name == spec.file_name
    assert round(os.path.getsize(path) / 1024 / 1024, 2) == round(spec.file_size_mb, 2)


@pytest.mark.parametrize("name", BUNDLED_NAMES)
def test_bundled_preprocessing_is_tf_lite(name):
    t = get_spec(name).transforms()
    crop, resize = LITE_SIZES[name]
    assert t.crop_size == [crop] and t.resize_size == [resize]
    assert t.mean == [0.5, 0.5, 0.5] and t.std == [0.5, 0.5, 0.5]
    assert t.interpolation == torchvision.transforms.InterpolationMode.BICUBIC


def test_build_kwargs_match_what_torchvision_builders_pass():
    assert get_spec("googlenet").build_kwargs == {
        "num_classes": 1000,
        "transform_input": True,
        "aux_logits": False,
        "init_weights": False,
    }
    assert get_spec("vit_h_14").build_kwargs["image_size"] == 518  # SWAG default weights
    assert get_spec("maxvit_t").build_kwargs["input_size"] == (224, 224)


def test_unknown_model():
    with pytest.raises(UnknownModel) as info:
        get_spec("resnet9000")
    assert isinstance(info.value, ZooScopeError)
    message = str(info.value)
    assert "resnet9000" in message
    assert "python -m core models --all" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no KeyError noise


def test_all_specs_is_cached():
    assert catalog.all_specs() is catalog.all_specs()
