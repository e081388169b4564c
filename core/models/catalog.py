"""The model catalogue: one `ModelSpec` per model, built from torchvision's own registry."""

from __future__ import annotations

import difflib
import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn
import torchvision
from torchvision.models import Weights, WeightsEnum, get_model_builder, get_model_weights, list_models
from torchvision.transforms._presets import ImageClassification

from core.errors import UnknownModel, UnknownWeights
from core.models import bundled
from core.models.families import FamilyTraits, traits
from core.models.labels import model_label, model_slug

# What the UI offers first; every other torchvision classifier stays reachable by name.
CURATED = (
    "efficientnet_lite0",
    "resnet18",
    "resnet50",
    "vgg16",
    "efficientnet_b0",
    "efficientnet_v2_s",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "vit_b_16",
    "convnext_tiny",
)
OFFLINE_DEFAULT = bundled.NAMES[0]  # the bundled EfficientNet-Lite0: real weights, no network needed

# Friendlier family names than torchvision's module names, for tables and chart colours.
_FAMILY_NAMES = {
    "vision_transformer": "vit",
    "swin_transformer": "swin",
    "mobilenetv2": "mobilenet_v2",
    "mobilenetv3": "mobilenet_v3",
    "shufflenetv2": "shufflenet_v2",
}


@dataclass(frozen=True)
class ModelSpec:
    """Everything the app knows about a model before loading it.

    `weights` is a torchvision `Weights`-shaped entry (url, transforms, meta): for torchvision
    models their DEFAULT weights unless another published version was asked for (get_spec(name,
    weights=...)), for bundled models our own declaration. Transforms and input size follow it.
    """

    name: str
    family: str
    source: str  # "torchvision" or "bundled"
    weights: WeightsEnum | Weights
    builder: Callable[..., nn.Module]
    # What torchvision's builder would pass when given these weights (see _build_kwargs).
    build_kwargs: dict[str, Any] = field(default_factory=dict)
    # Maps the file's state dict onto the built module's keys.
    adapt_state_dict: Callable[[dict, nn.Module], dict] = lambda state_dict, model: state_dict
    # False for a published version other than torchvision's DEFAULT (resnet50's IMAGENET1K_V1).
    default_weights: bool = True

    def build(self) -> nn.Module:
        """The architecture with untrained parameters (call under torch.device("meta") to skip init)."""
        return self.builder(weights=None, **self.build_kwargs)

    @property
    def weights_id(self) -> str:
        return str(self.weights)

    @property
    def version(self) -> str:
        """The weights' own name in their enum: "IMAGENET1K_V2" (bundled: "IMAGENET1K")."""
        return self.weights_id.rsplit(".", 1)[-1]

    @property
    def weights_choice(self) -> str | None:
        """None for the default weights, else the version: what a ModelKey's `weights` holds."""
        return None if self.default_weights else self.version

    @property
    def label(self) -> str:
        """What a person reads: "resnet50", or "resnet50 · IMAGENET1K_V1" for a version that is not the default."""
        return model_label(self.name, None, self.weights_choice)

    @property
    def slug(self) -> str:
        """The model and its weights in a file or cache key: "resnet50", "resnet50-IMAGENET1K_V1"."""
        return model_slug(self.name, None, self.weights_choice)

    @property
    def recipe(self) -> str:
        """The link to how these weights were trained (torchvision's meta), or ""."""
        return str(self.meta.get("recipe", ""))

    @property
    def meta(self) -> dict[str, Any]:
        return self.weights.meta

    @property
    def categories(self) -> list[str]:
        return self.meta["categories"]

    @property
    def acc1(self) -> float:
        return self.meta["_metrics"]["ImageNet-1K"]["acc@1"]

    @property
    def acc5(self) -> float:
        return self.meta["_metrics"]["ImageNet-1K"]["acc@5"]

    @property
    def num_params(self) -> int:
        return self.meta["num_params"]

    @property
    def gflops(self) -> float:
        return self.meta["_ops"]

    @property
    def file_size_mb(self) -> float:
        return self.meta["_file_size"]

    @property
    def file_name(self) -> str:
        return self.weights.url.rsplit("/", 1)[-1]

    @property
    def input_size(self) -> int:
        return self.transforms().crop_size[0]

    @property
    def traits(self) -> FamilyTraits:
        """What this architecture's family table row says (head, last block, Grad-CAM layer, stages, ...)."""
        return traits(self.family, self.name)

    @property
    def cam_target(self) -> tuple[str, str] | None:
        """(layer path, output layout) for Grad-CAM, or None where the family has none."""
        found = self.traits
        return (found.cam_target, found.cam_layout) if found.cam_target else None

    def transforms(self) -> ImageClassification:
        """The weights' own evaluation preprocessing (resize, crop, normalise): torchvision's preset, an nn.Module."""
        return self.weights.transforms()

    def row(self) -> dict[str, Any]:
        """One flat row for tables and JSON."""
        return {
            "name": self.name,
            "family": self.family,
            "weights": self.weights_id,
            "acc1": self.acc1,
            "acc5": self.acc5,
            "params_m": round(self.num_params / 1e6, 2),
            "gflops": self.gflops,
            "size_mb": self.file_size_mb,
            "input_size": self.input_size,
        }


def _family(builder: Callable) -> str:
    module = builder.__module__.rsplit(".", 1)[-1]
    return _FAMILY_NAMES.get(module, module)


# torchvision's builders change a few constructor arguments when given pretrained weights
# (googlenet.py, inception.py, vision_transformer.py, maxvit.py); we build with weights=None
# and so must pass the same ones.
_AUX_HEADS = ("aux1.", "aux2.", "AuxLogits.")


def _build_kwargs(name: str, family: str, weights: WeightsEnum) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"num_classes": len(weights.meta["categories"])}
    if name in ("googlenet", "inception_v3"):
        kwargs.update(transform_input=True, aux_logits=False, init_weights=False)
    elif family == "vit":
        kwargs["image_size"] = weights.meta["min_size"][0]
    elif family == "maxvit":
        kwargs["input_size"] = weights.meta["min_size"]
    return kwargs


# densenet.py: old checkpoints name layers 'norm.1' where the module now says 'norm1'.
_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def _adapt_torchvision_state_dict(state_dict: dict, model: nn.Module) -> dict:
    adapted = {}
    for key, tensor in state_dict.items():
        if key.startswith(_AUX_HEADS):
            continue  # auxiliary training heads; torchvision drops them after loading too
        if match := _DENSENET_KEY.match(key):
            key = match.group(1) + match.group(2)
        adapted[key] = tensor
    return adapted


def _torchvision_spec(name: str, weights: WeightsEnum | None = None) -> ModelSpec:
    builder = get_model_builder(name)
    family = _family(builder)
    default = get_model_weights(name).DEFAULT
    weights = weights or default
    return ModelSpec(
        name=name,
        family=family,
        source="torchvision",
        weights=weights,
        builder=builder,
        build_kwargs=_build_kwargs(name, family, weights),
        adapt_state_dict=_adapt_torchvision_state_dict,
        default_weights=weights is default,
    )


def _classifies_imagenet(weights: WeightsEnum) -> bool:
    """Whether a weights entry is an ImageNet classifier with published results (vgg16's
    IMAGENET1K_FEATURES has no classes and no accuracy: a backbone for detection, not offered)."""
    acc1 = weights.meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1", math.nan)
    return bool(weights.meta.get("categories")) and math.isfinite(acc1)


@functools.cache
def all_specs() -> dict[str, ModelSpec]:
    """Every classification model: torchvision's registry plus the bundled offline models."""
    specs = {name: _torchvision_spec(name) for name in list_models(module=torchvision.models)}
    for entry in bundled.BUNDLED:
        specs[entry.name] = ModelSpec(
            name=entry.name,
            family=entry.family,
            source="bundled",
            weights=entry.weights,
            builder=entry.builder,
            adapt_state_dict=entry.adapt_state_dict,
        )
    return specs


def get_spec(name: str, weights: str | None = None) -> ModelSpec:
    """The catalogue entry for `name`, in its default weights (None or "DEFAULT") or in the published
    version `weights` names ("IMAGENET1K_V1"); UnknownModel / UnknownWeights (with the choices) otherwise."""
    try:
        spec = all_specs()[name]
    except KeyError:
        close = difflib.get_close_matches(name, all_specs(), n=3, cutoff=0.6)
        hint = f" Closest: {', '.join(close)}." if close else ""
        raise UnknownModel(
            f"There is no model called '{name}'.{hint} Run `python -m core models --all` to list them."
        ) from None
    if weights is None or weights in ("DEFAULT", spec.version):
        return spec
    versions = _versions(name)
    if weights not in versions:
        raise UnknownWeights(f"{name} has no weights called '{weights}'; choose one of: {', '.join(versions)}.")
    return versions[weights]


@functools.cache
def _versions(name: str) -> dict[str, ModelSpec]:
    """Every published ImageNet classifier version of `name`, in torchvision's order; the default's own spec."""
    default = get_spec(name)
    if default.source != "torchvision":
        return {default.version: default}
    return {
        member.name: default if member is default.weights else _torchvision_spec(name, member)
        for member in get_model_weights(name)
        if member is default.weights or _classifies_imagenet(member)
    }


def weights_versions(name: str) -> list[ModelSpec]:
    """`name`'s weights versions, one spec each (accuracy, recipe, file size, input size from their meta)."""
    return list(_versions(name).values())


def spec_for_weights_id(name: str, weights_id: str) -> ModelSpec | None:
    """The version of `name` whose weights_id is `weights_id` ("ResNet50_Weights.IMAGENET1K_V1"), or None."""
    if name not in all_specs():
        return None
    return next((spec for spec in weights_versions(name) if spec.weights_id == weights_id), None)


def curated_specs() -> list[ModelSpec]:
    return [get_spec(name) for name in CURATED]
