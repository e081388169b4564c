"""core.models.family_paths, the one reader of the family table, over the whole catalogue on the meta device
(no weights): every fact the table states names a module of the right kind; anatomy, fine-tuning's depths
and the stage maps read the same stages; and the depths train strictly more, in order."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn as nn
from PIL import Image

from core.errors import ZooScopeError
from core.finetune import depth
from core.finetune.depth import DEPTHS, cut_for
from core.inside.anatomy import anatomy
from core.inside.stage_maps import stage_maps
from core.models.building import build_on_meta
from core.models.catalog import all_specs, get_spec
from core.models.family_paths import (
    FamilyPaths,
    concrete_path,
    expand_patterns,
    family_paths,
    get_layer,
    resolve_layer,
    set_layer,
)
from tests.families import smallest_of_each_family
from tests.unit.test_explain import random_loaded

ALL_NAMES = sorted(all_specs())
WITH_HEAD = [name for name in ALL_NAMES if get_spec(name).traits.head is not None]
EQUAL_BLOCKS = [name for name in ALL_NAMES if get_spec(name).traits.equal_blocks]  # ViT, Swin, ConvNeXt, MaxViT
# Where the table has exceptions for one model, that model too.
EXCEPTIONS = sorted({model for name in ALL_NAMES for model in get_spec(name).traits.by_model})

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- the reader on a small model ------------------------------------------------------------------


def _toy() -> nn.Module:
    model = nn.Module()
    model.stem = nn.Conv2d(3, 4, 1)
    model.features = nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 1), nn.MaxPool2d(2))
    model.layers = nn.Sequential(*(nn.Linear(4, 4) for _ in range(7)))
    model.head = nn.Linear(4, 2)
    return model


def test_paths_positions_and_patterns():
    model = _toy()
    assert concrete_path(model, "features.-1") == "features.4" and concrete_path(model, "layers.2") == "layers.2"
    assert resolve_layer(model, "features.-2") == (model.features, "3")
    assert expand_patterns(model, ("stem", "features.*MaxPool2d")) == ["stem", "features.2", "features.4"]
    assert expand_patterns(model, ("layers.*/3",)) == ["layers.2", "layers.4", "layers.6"]  # runs of 3, 2, 2
    assert expand_patterns(model, ("layers.*/7",)) == [f"layers.{i}" for i in range(7)]
    assert expand_patterns(model, ("*",)) == ["stem", "features", "layers", "head"]
    assert expand_patterns(model, ("*Linear",)) == ["head"]
    set_layer(model, "layers.-1", nn.Identity())
    assert isinstance(get_layer(model, "layers.6"), nn.Identity)
    for bad in ("features.9", "layers.-8", "nothing", "", "stem.weight"):
        with pytest.raises(ZooScopeError, match="no layer"):
            get_layer(model, bad, "toy")
    with pytest.raises(ZooScopeError, match="not one it knows"):
        expand_patterns(model, ("layers.*/0",), "toy")


# --- every catalogue model, built once on the meta device ---------------------------------------------


@functools.cache
def _built(name: str) -> tuple[nn.Module, FamilyPaths]:
    """`name` built on the meta device, once for the file, and the table read over it."""
    spec = get_spec(name)
    model = build_on_meta(spec).to("meta").eval()
    return model, family_paths(model, spec.traits, name)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_fact_names_a_module_of_its_kind(name):
    spec = get_spec(name)
    model, paths = _built(name)
    if spec.traits.head is not None:
        head = get_layer(model, paths.head)
        assert isinstance(head, nn.Linear) and head.out_features == len(spec.categories)
    if spec.traits.last_block is not None:
        assert any(True for _ in get_layer(model, paths.last_block).parameters())
    assert isinstance(get_layer(model, paths.cam_target), nn.Module)
    assert len(paths.stage_ends) >= 3 and len(set(paths.stage_ends)) == len(paths.stage_ends)
    assert len(set(paths.equal_blocks)) == len(paths.equal_blocks)
    assert bool(paths.equal_blocks) == (spec.family in ("vit", "swin", "convnext", "maxvit"))


# One model per family, each model with exceptions of its own, and the two of equal blocks.
SOME = sorted({*smallest_of_each_family(), *EXCEPTIONS, "vit_b_16", "swin_t", "squeezenet1_1"})


@pytest.mark.parametrize("name", SOME)
def test_the_facts_run_in_network_order_and_the_cam_target_gives_maps(name):
    spec = get_spec(name)
    model, paths = _built(name)
    finished: list[str] = []
    cam_outputs: list[torch.Tensor] = []
    watched = {*paths.stage_ends, *paths.equal_blocks, paths.cam_target}

    def hook(path: str):
        def noted(module: nn.Module, args: tuple, output: object) -> None:
            finished.append(path)
            if path == paths.cam_target:
                cam_outputs.append(output)

        return noted

    handles = [get_layer(model, path).register_forward_hook(hook(path)) for path in watched]
    try:
        with torch.no_grad():
            model(torch.empty(1, 3, spec.input_size, spec.input_size, device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    for found in (paths.stage_ends, paths.equal_blocks):  # each runs once, in the table's order
        assert [path for path in finished if path in found] == list(found)
    # Grad-CAM's layer gives maps ("nchw", "nhwc": batch, 2 spatial and a channel dimension) or tokens.
    assert [output.dim() for output in cam_outputs] == [3 if spec.traits.cam_layout == "tokens" else 4]


def _within(path: str, ancestor: str) -> bool:
    return path == ancestor or path.startswith(f"{ancestor}.")


@pytest.mark.parametrize("name", WITH_HEAD)
def test_depth_cuts_at_the_stages_the_reader_reads(name):
    paths = _built(name)[1]
    ends = paths.stage_ends
    assert depth.stage_ends(name) == ends
    if paths.equal_blocks:
        return  # "half" starts at one of the blocks instead (below)
    # "half" trains the later half of the stages: the middle stage end runs before the cut, every later one after.
    half = cut_for(name, "half")
    middle = len(ends) // 2 - 1 if len(ends) > 1 else 0
    assert any(_within(ends[middle], frozen) for frozen in half.prefix), (ends[middle], half.prefix)
    for end in ends[middle + 1 :]:
        assert any(_within(end, trained) or _within(trained, end) for trained in half.tail), (end, half.tail)


# Every kind of stage pattern: "X.*Class" (and a model's own exception), positions, "X.*", "X.*/N".
@pytest.mark.parametrize("name", ["vgg11_bn", "mobilenet_v3_small", "efficientnet_lite0", "regnet_y_400mf", "vit_b_16"])
def test_anatomy_reports_the_stages_depth_cuts_at(name):
    assert tuple(stage.name for stage in anatomy(name).stages) == depth.stage_ends(name) == _built(name)[1].stage_ends


@pytest.mark.parametrize("name", ["vit_b_16", "mobilenet_v3_small"])
def test_stage_maps_hook_the_same_stages(name):
    maps = stage_maps(random_loaded(name), Image.new("RGB", (64, 48), (120, 80, 40)))
    found = anatomy(name)
    assert tuple(stage.stage for stage in maps.stages) == depth.stage_ends(name)
    assert [stage.total_channels for stage in maps.stages] == [stage.channels for stage in found.stages]


# --- how much each depth trains -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_NAMES)
def test_each_depth_trains_strictly_more(name):
    if name not in WITH_HEAD:  # a convolutional classifier: nothing linear to replace, no depth to train
        for each in DEPTHS:
            with pytest.raises(ZooScopeError, match="no linear classifier"):
                cut_for(name, each)
        return
    head, last, half, whole = (cut_for(name, each).trainable_params for each in DEPTHS)
    assert 0 == head < last < half < whole, (head, last, half, whole)
    # "all" trains at most the backbone: every parameter but the replaced head's.
    model, paths = _built(name)
    replaced = sum(p.numel() for p in get_layer(model, paths.head).parameters())
    assert whole <= sum(p.numel() for p in model.parameters()) - replaced


@pytest.mark.parametrize("name", EQUAL_BLOCKS)
def test_half_of_a_network_of_equal_blocks_is_about_half(name):
    assert {"vit", "swin"} <= {get_spec(each).family for each in EQUAL_BLOCKS}
    half, whole = (cut_for(name, each) for each in ("half", "all"))
    assert half.trainable_params <= 0.7 * whole.trainable_params
    assert half.trainable_params >= 0.4 * whole.trainable_params
    assert half.start in _built(name)[1].equal_blocks  # it starts at a block


def test_vit_half_is_the_later_six_of_twelve_layers():
    half = cut_for("vit_b_16", "half")
    assert half.start == "encoder.layers.encoder_layer_6"
    assert half.tail[:6] == tuple(f"encoder.layers.encoder_layer_{i}" for i in range(6, 12))
    # grouped by the four runs of three layers anatomy shows, the final LayerNorm after the last stage
    assert half.groups[:2] == (
        ("encoder.layers.encoder_layer_6", "encoder.layers.encoder_layer_7", "encoder.layers.encoder_layer_8"),
        ("encoder.layers.encoder_layer_9", "encoder.layers.encoder_layer_10", "encoder.layers.encoder_layer_11"),
    )
