"""Per-family knowledge, in one table: a new family is one row here.

What the rest of the app needs to know about an architecture that its weights' metadata does
not say, the way timm's `PretrainedCfg` carries `classifier` and `first_conv`:

- `head`: the final nn.Linear classifier (fine-tuning replaces it), or None where there is none;
- `last_block`: the block fine-tuning may unfreeze together with the head;
- `cam_target` and `cam_layout`: where Grad-CAM looks (the last layer with a spatial layout) and
  that layer's output layout: "nchw" maps, "nhwc" (Swin's channels-last stages) or "tokens"
  (ViT: a class token, then a square grid of patch tokens);
- `stages`: where each stage of the network ends, in network order (Inside draws each stage);
- `equal_blocks`: for a network built of runs of equal blocks (ViT's encoder layers, Swin's and
  ConvNeXt's blocks in each stage), those blocks: there most parameters sit in one or two long
  stages, so "half" fine-tuning cuts between blocks, not after a stage (core.finetune.depth);
- `channels_last`: mostly 2-D convolutions on NCHW maps, which cuDNN runs fastest channels-last;
- `bf16_slow`: bf16 autocast measured slower than fp32 even at batch 64 (H100: depthwise
  convolutions do not use the tensor cores);
- `activation_elements`: the peak float32 elements an inference forward holds per input pixel and
  image, measured (bench/bench_footprints.py: torch 2.14, one thread, batch 16, 224 px) and rounded
  up; the job queue's memory estimates read it (core.models.footprints). A family not measured gets
  the default, above all measured but VGG's;
- `attention_quadratic`: global attention (ViT): its scores grow with the square of the tokens, so
  `activation_elements` (measured at 224 px) grows with the input's area.

Paths are dotted module paths; an integer part indexes a module's children by position, a
negative one from the end ("classifier.-1" is the last module of a Sequential). In `stages`,
"features.*" stands for every child of `features` in order, "features.*MaxPool2d" for every
child of that class, and "encoder.layers.*/4" for its children in 4 runs of equal length, each
run ending a stage (ViT-B/16's 12 encoder layers and ViT-H/14's 32 both make four stages);
`equal_blocks` uses the same patterns. One reader resolves them all over a built model:
core.models.family_paths.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypedDict

LAYOUTS = ("nchw", "nhwc", "tokens")


class TraitChanges(TypedDict, total=False):
    """The fields of FamilyTraits one model may change (a misspelt or mistyped one is a type error)."""

    head: str | None
    last_block: str | None
    cam_target: str | None
    cam_layout: str
    stages: tuple[str, ...]
    channels_last: bool
    bf16_slow: bool
    activation_elements: int
    attention_quadratic: bool


@dataclass(frozen=True)
class FamilyTraits:
    head: str | None
    last_block: str | None
    cam_target: str | None
    cam_layout: str = "nchw"
    stages: tuple[str, ...] = ()
    equal_blocks: tuple[str, ...] = ()
    channels_last: bool = True
    bf16_slow: bool = False
    activation_elements: int = 120
    attention_quadratic: bool = False
    # Whether core.shrink may prune its channels: attention blocks need their heads pruned together.
    channel_pruning: bool = True
    # Model name -> fields that differ from the family's (e.g. VGG with batch norm).
    by_model: Mapping[str, TraitChanges] = field(default_factory=dict)

    def for_model(self, name: str) -> FamilyTraits:
        """These traits with `name`'s own exceptions applied."""
        changes = self.by_model.get(name)
        return dataclasses.replace(self, **changes, by_model={}) if changes else self


# VGG with batch norm: the last conv is followed by BN, ReLU, MaxPool (without: ReLU, MaxPool).
_VGG_BN: dict[str, TraitChanges] = {f"vgg{depth}_bn": {"last_block": "features.-4"} for depth in (11, 13, 16, 19)}

FAMILIES: dict[str, FamilyTraits] = {
    "resnet": FamilyTraits(  # resnet, resnext and wide_resnet
        head="fc",
        last_block="layer4",
        cam_target="layer4",
        stages=("maxpool", "layer1", "layer2", "layer3", "layer4"),
        activation_elements=80,  # 77 measured (resnet50)
    ),
    "vgg": FamilyTraits(
        head="classifier.-1",
        last_block="features.-3",
        cam_target="features.-2",
        stages=("features.*MaxPool2d",),
        by_model=_VGG_BN,
        activation_elements=200,  # 192 measured (vgg16)
    ),
    "alexnet": FamilyTraits(
        head="classifier.-1",
        last_block="features.-3",
        cam_target="features.-2",
        stages=("features.*MaxPool2d",),
        activation_elements=40,
    ),
    "efficientnet": FamilyTraits(  # b0-b7 and v2: features[0] is the stem, features[-1] the final 1x1 conv
        head="classifier.-1",
        last_block="features.-2",
        cam_target="features.-1",
        stages=("features.*",),
        bf16_slow=True,
        activation_elements=80,  # 79 measured (efficientnet_b0)
    ),
    "efficientnet_lite": FamilyTraits(  # timm's tf_efficientnet_lite layout
        head="classifier",
        last_block="blocks.-1",
        cam_target="bn2",
        stages=("bn1", "blocks.*", "bn2"),
        bf16_slow=True,
        activation_elements=80,
    ),
    "mobilenet_v2": FamilyTraits(
        head="classifier.-1",
        last_block="features.-2",
        cam_target="features.-1",
        stages=("features.1", "features.3", "features.6", "features.13", "features.17", "features.18"),
        bf16_slow=True,
        activation_elements=60,
    ),
    "mobilenet_v3": FamilyTraits(
        head="classifier.-1",
        last_block="features.-2",
        cam_target="features.-1",
        stages=("features.1", "features.3", "features.6", "features.12", "features.15", "features.16"),
        bf16_slow=True,
        by_model={
            "mobilenet_v3_small": {
                "stages": ("features.0", "features.1", "features.3", "features.8", "features.11", "features.12")
            }
        },
        activation_elements=50,  # 48 measured (mobilenet_v3_large)
    ),
    "convnext": FamilyTraits(
        head="classifier.-1",
        last_block="features.-1",
        cam_target="features.-1",
        stages=("features.0", "features.1", "features.3", "features.5", "features.7"),
        equal_blocks=("features.1.*", "features.3.*", "features.5.*", "features.7.*"),
        activation_elements=80,  # 70 measured (convnext_tiny)
    ),
    "densenet": FamilyTraits(
        head="classifier",
        last_block="features.denseblock4",
        cam_target="features",
        stages=(
            "features.pool0",
            "features.denseblock1",
            "features.denseblock2",
            "features.denseblock3",
            "features.norm5",
        ),
        activation_elements=100,  # 91 measured (densenet121)
    ),
    "regnet": FamilyTraits(
        head="fc",
        last_block="trunk_output.block4",
        cam_target="trunk_output",
        stages=("stem", "trunk_output.*"),
    ),
    "googlenet": FamilyTraits(
        head="fc",
        last_block="inception5b",
        cam_target="inception5b",
        stages=("maxpool1", "maxpool2", "inception3b", "inception4e", "inception5b"),
    ),
    "inception": FamilyTraits(
        head="fc",
        last_block="Mixed_7c",
        cam_target="Mixed_7c",
        stages=("maxpool1", "maxpool2", "Mixed_5d", "Mixed_6e", "Mixed_7c"),
    ),
    "squeezenet": FamilyTraits(  # a convolutional classifier: nothing linear to replace
        head=None,
        last_block=None,
        cam_target="features",
        stages=("features.*MaxPool2d", "features.-1"),
    ),
    "shufflenet_v2": FamilyTraits(
        head="fc",
        last_block="stage4",
        cam_target="conv5",
        stages=("maxpool", "stage2", "stage3", "stage4", "conv5"),
    ),
    "mnasnet": FamilyTraits(
        head="classifier.-1",
        last_block="layers.-4",  # then the final 1x1 conv, BN, ReLU
        cam_target="layers",
        stages=("layers.7", "layers.8", "layers.9", "layers.10", "layers.11", "layers.12", "layers.13", "layers.16"),
        bf16_slow=True,
    ),
    "maxvit": FamilyTraits(  # attention mixed with convolutions: layout left alone
        head="classifier.-1",
        last_block="blocks.-1",
        cam_target="blocks.-1",
        stages=("stem", "blocks.*"),
        equal_blocks=("blocks.0.layers.*", "blocks.1.layers.*", "blocks.2.layers.*", "blocks.3.layers.*"),
        channels_last=False,
        channel_pruning=False,
    ),
    "swin": FamilyTraits(  # permutes to NHWC itself
        head="head",
        last_block="features.-1",
        cam_target="features.-1",
        cam_layout="nhwc",
        stages=("features.0", "features.1", "features.3", "features.5", "features.7"),
        equal_blocks=("features.1.*", "features.3.*", "features.5.*", "features.7.*"),
        channels_last=False,
        activation_elements=120,  # 107 and 113 measured (swin_t, two runs): windows of tokens, linear in the area
        channel_pruning=False,
    ),
    "vit": FamilyTraits(  # token sequences
        head="heads.head",
        last_block="encoder.layers.-1",
        cam_target="encoder.layers.-1.ln_1",  # patch tokens after the last block get no gradient
        cam_layout="tokens",
        stages=("conv_proj", "encoder.layers.*/4"),
        equal_blocks=("encoder.layers.*",),
        channels_last=False,
        activation_elements=60,  # 59 measured (vit_b_16)
        attention_quadratic=True,
        channel_pruning=False,
    ),
}

# A family not in the table: nothing assumed (no head to replace, no Grad-CAM, default layout).
UNKNOWN = FamilyTraits(head=None, last_block=None, cam_target=None, channels_last=False, channel_pruning=False)


def traits(family: str, model: str | None = None) -> FamilyTraits:
    """The traits of `family` (with `model`'s own exceptions), or UNKNOWN."""
    found = FAMILIES.get(family, UNKNOWN)
    return found.for_model(model) if model else found
