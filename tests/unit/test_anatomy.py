"""core.inside.anatomy over the whole catalogue (after torchvision's test_extended_models.py), on the meta
device: every model summarises, its parameters equal the weights' metadata and its GFLOPS are
torchvision's; then the textbook facts: skip connections, depth, receptive fields."""

from __future__ import annotations

import math
import time

import pytest
import torch.nn as nn

from core.errors import UnknownModel
from core.inside import anatomy as anatomy_module
from core.inside.anatomy import (
    anatomy,
    compound_scaling_frame,
    stages_long_frame,
    summary_row,
    token_grid_side,
)
from core.models.building import build_on_meta
from core.models.catalog import all_specs, get_spec
from core.models.family_paths import expand_patterns

ALL_NAMES = sorted(all_specs())
# torchvision's metadata for inception_v3 counts its auxiliary classifier (AuxLogits), which
# the network drops after loading (torchvision too); GoogLeNet's metadata leaves its own out.
COUNTS_AUXILIARY = {"inception_v3"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_model_summarises_with_the_metadata_numbers(name):
    spec = get_spec(name)
    found = anatomy(name)
    assert found.model == name and found.family == spec.family and found.input_size == spec.input_size

    published = found.params + (found.auxiliary_params if name in COUNTS_AUXILIARY else 0)
    assert published == spec.num_params
    assert abs(found.gflops / spec.gflops - 1) <= 0.10
    # In fact torchvision's own figure to the three decimals it publishes: FlopCounterMode counts
    # a multiply-add as 2 FLOPs, torchvision's _ops count multiply-adds.
    assert abs(found.gflops - spec.gflops) <= 0.0005 + 1e-9

    # Every parameter and every FLOP is in exactly one stage or the head.
    parts = (*found.stages, found.head)
    assert sum(part.params for part in parts) == found.params
    assert sum(part.flops for part in parts) == found.flops
    assert len(found.stages) >= 3 and all(stage.blocks for stage in found.stages)
    assert found.head.output_shape == (1000,)
    for stage in found.stages:
        assert stage.layout in ("nchw", "nhwc", "tokens")
        assert stage.channels and stage.grid and min(stage.grid) >= 1
        assert stage.params >= sum(block.params for block in stage.blocks) >= 0
        assert stage.receptive_field is None or stage.receptive_field >= 2
    assert sum(stage.skips for stage in found.stages) + found.head.skips == found.skip_connections
    assert found.depth >= len(found.stages)


def test_auxiliary_classifiers_are_counted_apart():
    inception = anatomy("inception_v3")
    assert inception.auxiliary_params == 3_326_696 and inception.params == 23_834_568
    assert anatomy("googlenet").params == get_spec("googlenet").num_params
    assert anatomy("googlenet").auxiliary_params > 0
    assert anatomy("resnet50").auxiliary_params == 0


@pytest.mark.parametrize(
    ("name", "skips", "kind"),
    [
        ("resnet50", 16, "add"),  # one per Bottleneck, projection shortcuts included
        ("vgg16", 0, None),
        ("mobilenet_v2", 10, "add"),  # inverted residuals with stride 1 and equal widths
        ("vit_b_16", 24, "add"),  # two per encoder block: around attention, around the MLP
        ("densenet121", 58, "concat"),  # one per dense layer: 6 + 12 + 24 + 16
        ("shufflenet_v2_x1_0", 13, "concat"),  # the untouched half, in the 13 stride-1 units
        ("inception_v3", 0, None),  # branches are concatenated, but none is the block's input
    ],
)
def test_skip_connections(name, skips, kind):
    found = anatomy(name)
    assert found.skip_connections == skips
    assert found.skips_by_kind == ({kind: skips} if kind else {})


def test_skips_sit_in_their_blocks():
    resnet = anatomy("resnet50")
    bottlenecks = [block for stage in resnet.stages for block in stage.blocks if block.kind == "Bottleneck"]
    assert len(bottlenecks) == 16 and all(block.skips == 1 and block.skip_kind == "add" for block in bottlenecks)
    assert [stage.skips for stage in resnet.stages] == [0, 3, 4, 6, 3]
    vit = anatomy("vit_b_16")
    encoder_blocks = [block for stage in vit.stages for block in stage.blocks if block.kind == "EncoderBlock"]
    assert len(encoder_blocks) == 12 and all(block.skips == 2 for block in encoder_blocks)
    dense = anatomy("densenet121")
    dense_layers = [block for stage in dense.stages for block in stage.blocks if block.kind == "_DenseLayer"]
    assert len(dense_layers) == 58 and all(block.skips == 1 and block.skip_kind == "concat" for block in dense_layers)


@pytest.mark.parametrize(
    ("name", "depth"),
    [("resnet18", 18), ("resnet50", 50), ("vgg16", 16), ("densenet121", 121), ("densenet201", 201),
     ("googlenet", 22), ("inception_v3", 48), ("mobilenet_v2", 53)],
)  # fmt: skip
def test_depth_is_the_number_in_the_name(name, depth):
    assert anatomy(name).depth == depth


def test_resnet50_stages():
    found = anatomy("resnet50")
    assert [stage.name for stage in found.stages] == ["maxpool", "layer1", "layer2", "layer3", "layer4"]
    assert [stage.output_shape for stage in found.stages] == [
        (64, 56, 56), (256, 56, 56), (512, 28, 28), (1024, 14, 14), (2048, 7, 7)
    ]  # fmt: skip
    assert [len(stage.blocks) for stage in found.stages] == [4, 3, 4, 6, 3]
    assert found.stages[0].kind == "Conv2d, BatchNorm2d, ReLU, MaxPool2d"
    assert found.stages[1].kind == "3 Bottleneck"
    assert [block.path for block in found.stages[1].blocks] == ["layer1.0", "layer1.1", "layer1.2"]
    assert found.head.params == 2048 * 1000 + 1000


@pytest.mark.parametrize(
    ("name", "fields"),
    [
        ("vgg16", [6, 16, 44, 100, 212]),  # the textbook VGG-16: 212 px at pool5
        ("alexnet", [19, 67, 195]),
        ("resnet50", [11, 35, 91, 267, 427]),
        ("inception_v3", [15, 31, 127, 927, 1311]),  # 1311 px as in Araujo et al. (Distill, 2019)
    ],
)
def test_receptive_fields(name, fields):
    assert [stage.receptive_field for stage in anatomy(name).stages] == fields


def test_receptive_fields_of_attention_and_gated_models():
    vit = anatomy("vit_b_16")
    assert vit.stages[0].receptive_field == 16  # the 16 x 16 patch
    assert all(math.isinf(stage.receptive_field) for stage in vit.stages[1:])  # attention sees everything
    swin = anatomy("swin_t")
    assert swin.stages[0].receptive_field == 4
    assert all(stage.receptive_field is None for stage in swin.stages[1:])  # shifted windows: not traced
    # Squeeze-excitation's global gate does not make EfficientNet's windows the whole image.
    fields = [stage.receptive_field for stage in anatomy("efficientnet_b0").stages]
    assert all(math.isfinite(field) for field in fields) and fields == sorted(fields)


def test_vit_encoder_layers_make_four_stages():
    for name, layers in (("vit_b_16", 12), ("vit_h_14", 32)):
        found = anatomy(name)
        assert found.stages[0].name == "conv_proj"
        ends = [int(stage.name.rsplit("_", 1)[1]) for stage in found.stages[1:]]
        assert ends == [layers // 4 - 1, layers // 2 - 1, 3 * layers // 4 - 1, layers - 1]
        assert sum(block.kind == "EncoderBlock" for stage in found.stages for block in stage.blocks) == layers
        assert all(stage.layout == "tokens" and stage.grid == (14 if name == "vit_b_16" else 37,) * 2
                   for stage in found.stages[1:])  # fmt: skip


def test_stage_patterns():
    model = build_on_meta(get_spec("vgg16"))
    assert expand_patterns(model, ("features.*MaxPool2d",)) == ["features.4", "features.9", "features.16",
                                                                "features.23", "features.30"]  # fmt: skip
    assert expand_patterns(model, ("features.0", "classifier.-1")) == ["features.0", "classifier.6"]
    assert expand_patterns(model, ("features.*/3",)) == [
        "features.10",
        "features.20",
        "features.30",
    ]  # 31 children: runs of 11, 10, 10
    assert expand_patterns(model, ("features.*",))[:2] == ["features.0", "features.1"]


def test_token_grid():
    assert token_grid_side(197) == 14  # a class token and 14 x 14 patches
    assert token_grid_side(196) == 14
    assert token_grid_side(50) == 7
    assert token_grid_side(12) is None  # neither 12 nor 11 is a square


def test_json_has_the_promised_keys():
    found = anatomy("mobilenet_v2").as_json()
    assert {"model", "family", "input_size", "params", "gflops", "skip_connections", "stages"} <= set(found)
    first = found["stages"][0]
    assert {"name", "kind", "output_shape", "params", "gflops", "receptive_field", "blocks"} <= set(first)
    assert found["params"] == get_spec("mobilenet_v2").num_params


def test_unknown_model_names_the_closest():
    with pytest.raises(UnknownModel, match="Closest: resnet50"):
        anatomy("resnet5")


def test_cached_and_warm_in_well_under_a_second():
    anatomy("densenet201")
    start = time.perf_counter()
    found = anatomy("densenet201")
    assert anatomy("densenet201") is found
    assert time.perf_counter() - start < 0.05  # a dictionary lookup, whatever the machine's load


def test_anatomy_leaves_no_hooks_and_builds_nothing_real():
    # The anatomy's model is its own (built on meta here); nothing hooks the catalogue builder's modules.
    anatomy_module.anatomy.cache_clear()
    found = anatomy("resnet18")
    assert found.params == get_spec("resnet18").num_params
    assert nn.modules.module._global_forward_hooks == {}
    assert nn.modules.module._global_forward_pre_hooks == {}


def test_frames_for_side_by_side_and_compound_scaling():
    frame = stages_long_frame([anatomy("resnet50"), anatomy("vgg16")])
    assert set(frame["model"]) == {"resnet50", "vgg16"}
    assert frame.groupby("model")["params_m"].sum()["vgg16"] * 1e6 == pytest.approx(get_spec("vgg16").num_params)
    scaling = compound_scaling_frame(["efficientnet_b0", "efficientnet_b3", "efficientnet_lite0", "resnet50"])
    assert list(scaling["model"]) == ["efficientnet_b0", "efficientnet_b3", "efficientnet_lite0"]
    b0, b3 = scaling.iloc[0], scaling.iloc[1]
    assert b3["depth"] > b0["depth"] and b3["width"] > b0["width"] and b3["resolution"] > b0["resolution"]
    assert b0["resolution"] == 224 and b3["acc1"] == get_spec("efficientnet_b3").acc1


@pytest.mark.parametrize(
    ("name", "width", "stage", "shown"),
    [
        ("resnet50", 2048, 5, "2048 x 7 x 7"),  # once reported as 1024: the last stage was left out
        ("vgg16", 512, 4, "512 x 14 x 14"),  # the first of two equally wide stages
        ("efficientnet_b0", 1280, 9, "1280 x 7 x 7"),
        ("swin_t", 768, 5, "7 x 7 x 768"),  # channels last
        ("vit_b_16", 768, 1, "768 x 14 x 14"),
    ],
)
def test_the_widest_stage_is_the_one_the_stage_table_shows(name, width, stage, shown):
    found = anatomy(name)
    row = summary_row(found)
    assert (row["width"], row["widest_stage"]) == (width, stage) == (found.widest, found.widest_stage.index + 1)
    table = found.stages_frame().set_index("stage")
    assert table.loc[str(stage), "output_shape"] == shown
    # Compound scaling alone leaves out EfficientNet's final 1x1 convolution, and says so.
    if name == "efficientnet_b0":
        (b0,) = compound_scaling_frame([name]).to_dict("records")
        assert b0["width"] == 320
