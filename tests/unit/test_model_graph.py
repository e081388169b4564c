"""core.inside.model_graph: the DOT source Inside draws, its skip edges, and that it stays readable."""

from __future__ import annotations

import re

import pytest

from core.inside.anatomy import anatomy
from core.inside.model_graph import DEPTHS, default_stage, model_dot, node_count
from core.models.catalog import all_specs

ALL_NAMES = sorted(all_specs())
# Readable: what fits a page at the default depth, and one stage's layers.
MAX_NODES = {"stages": 16, "blocks": 45, "layers": 120}
SKIP_EDGE = re.compile(r'-> \S+ \[label="?(\+x|concat)(?: ×(\d+))?"? .*style=dashed')  # DOT quotes only when needed

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def skips_drawn(dot: str) -> int:
    """Skip connections carried by the dashed, labelled edges of a "blocks" graph."""
    return sum(int(count or 1) for _, count in SKIP_EDGE.findall(dot))


@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_model_draws_readably_at_every_depth(name):
    found = anatomy(name)
    for depth in ("stages", "blocks"):
        dot = model_dot(found, depth)
        assert dot.startswith("digraph") and dot.rstrip().endswith("}")
        assert node_count(dot) <= MAX_NODES[depth], (name, depth, node_count(dot))
    for stage in range(len(found.stages) + 1):
        assert node_count(model_dot(found, "layers", stage)) <= MAX_NODES["layers"] or name == "maxvit_t"
    # Every skip connection is drawn, folded blocks' ones on the edge around the fold.
    assert skips_drawn(model_dot(found, "blocks")) == found.skip_connections


def test_resnet50_blocks_graph():
    dot = model_dot(anatomy("resnet50"), "blocks")
    for stage in ("1. maxpool", "2. layer1", "3. layer2", "4. layer3", "5. layer4", "head"):
        assert f'label="{stage} · ' in dot
    assert "0: Bottleneck" in dot and "bn1: BatchNorm2d + ReLU" in dot  # ReLU written into the node before
    assert "… 2 more: 3 to 4" in dot  # layer3's six blocks: three, two folded, the last
    assert skips_drawn(dot) == 16
    assert 'label="logits\\n1000"' in dot and 'label="image\\n3 x 224 x 224"' in dot


def test_a_plain_stack_has_no_skip_edges():
    dot = model_dot(anatomy("vgg16"), "blocks")
    assert "style=dashed color" not in dot and skips_drawn(dot) == 0


def test_densenet_and_vit_h_fold_to_a_readable_size():
    densenet = model_dot(anatomy("densenet201"), "blocks")
    # denseblock3's stage: the transition before it and two dense layers, 45 folded, the last.
    assert "… 45 more: denselayer3 to denselayer47" in densenet
    assert skips_drawn(densenet) == 98  # 6 + 12 + 48 + 32 dense layers
    vit = model_dot(anatomy("vit_h_14"), "blocks")
    assert skips_drawn(vit) == 64 and node_count(vit) <= MAX_NODES["blocks"]


def test_stages_depth_one_node_per_stage():
    found = anatomy("resnet50")
    dot = model_dot(found, "stages")
    assert node_count(dot) == len(found.stages) + 3  # the stages, the head, image and logits
    assert "16 skip" not in dot and "6 skip connections" in dot  # layer3's


def test_layers_depth_shows_the_residual_add():
    found = anatomy("resnet50")
    assert default_stage(found) == 1  # layer1: the first stage with a skip connection
    dot = model_dot(found, "layers", 1)
    assert "conv1: Conv2d 1x1" in dot and "conv2: Conv2d 3x3" in dot and "downsample" in dot
    assert dot.count('label="+"') == 3  # out = F(x) + x, once per Bottleneck
    skip_edges = [line.split(" [")[0].strip() for line in dot.splitlines() if "->" in line and "dashed" in line]
    # x reaching each add around its block; in the first block through the projection shortcut
    assert skip_edges == ["input -> layer1_0_downsample_0", "layer1_0_relu_2 -> add_1", "layer1_1_relu_2 -> add_2"]
    vit = model_dot(anatomy("vit_b_16"), "layers", 1)
    assert "self_attention: MultiheadAttention" in vit and "Linear 768→3072" in vit


def test_bad_depth_and_stage():
    found = anatomy("resnet18")
    with pytest.raises(ValueError, match="depth"):
        model_dot(found, "neurons")
    with pytest.raises(ValueError, match="stages 0 to 4"):
        model_dot(found, "layers", 9)
    assert set(DEPTHS) == {"stages", "blocks", "layers"}
