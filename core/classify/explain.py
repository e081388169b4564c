"""Class-activation maps (Grad-CAM) through captum: where in the image a model found its class.

The cached model is shared by every browser session and other threads run forwards on it at the
same moment, while captum has to register hooks on the layer it explains. So each explanation
builds a private *view* of the model: the same architecture built on the meta device, its
parameters assigned from the shared module (the same storage, nothing copied), and hooks and
layout adapters placed on the view only. The shared module is never changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
from captum.attr import LayerAttribution, LayerGradCam
from matplotlib import colormaps
from PIL import Image

from core import preprocessing
from core.errors import ZooScopeError
from core.models import footprints
from core.models.catalog import ModelSpec
from core.models.families import LAYOUTS
from core.models.family_paths import resolve_layer
from core.models.loading import LoadedModel
from core.models.views import private_view

DEFAULT_COLORMAP = "jet"


@dataclass(frozen=True, eq=False)  # eq=False: arrays and images have no plain ==
class Explanation:
    """One Grad-CAM map for one image, class and model."""

    model: str
    class_index: int
    label: str
    probability: float  # softmax probability of `class_index` for this image
    heatmap: np.ndarray = field(repr=False)  # (S, S) float32 in [0, 1]; S = the model's input size
    view: Image.Image = field(repr=False)  # the S x S RGB crop the model sees, before normalisation


def model_view(spec: ModelSpec, image: Image.Image) -> Image.Image:
    """The resized, centre-cropped RGB image the model sees (its own preset, minus normalisation).

    The same view `grad_cam` feeds the model (core.preprocessing), so the heat map lines up with
    these pixels exactly.
    """
    return preprocessing.model_view(image, spec.transforms())


def grad_cam_memory_mb(specs: list[ModelSpec]) -> float:
    """What Grad-CAM of one photo on each of `specs` in turn will hold at most (core.models.footprints):
    one forward and backward at a time, so the hungriest model's."""
    return max((footprints.grad_cam_mb(input_size=spec.input_size, family=spec.family) for spec in specs), default=0.0)


def grad_cam(loaded: LoadedModel, image: Image.Image, class_index: int | None = None) -> Explanation:
    """Grad-CAM of `class_index` (None: the model's top-1) for one image, upsampled to the input size."""
    spec = loaded.spec
    if spec.cam_target is None:
        raise ZooScopeError(f"Class-activation maps are not available for {spec.name} ({spec.family} models).")
    num_classes = len(loaded.categories)
    if class_index is not None and not 0 <= class_index < num_classes:
        raise ZooScopeError(f"Class {class_index} does not exist: {spec.name} knows classes 0 to {num_classes - 1}.")
    path, layout = spec.cam_target
    view, layer = _explainable_view(loaded, path, layout)

    batch = preprocessing.model_input(image, loaded.preprocess).unsqueeze(0).to(loaded.device)
    with torch.no_grad():
        probs = view(batch).float().softmax(dim=1)[0]
    if class_index is None:
        class_index = int(probs.argmax())

    # Autograd on (no inference_mode): captum makes the input require grad, so gradients reach
    # the layer although every parameter has requires_grad=False.
    cam = LayerGradCam(view, layer).attribute(batch, target=class_index, relu_attributions=True)
    size = spec.input_size
    cam = LayerAttribution.interpolate(cam.detach(), (size, size), interpolate_mode="bilinear")
    return Explanation(
        model=spec.name,
        class_index=class_index,
        label=loaded.categories[class_index],
        probability=float(probs[class_index]),
        heatmap=_unit_range(cam[0, 0].float().cpu().numpy()),
        view=model_view(spec, image),
    )


def overlay(explanation: Explanation, alpha: float = 0.5, colormap: str = DEFAULT_COLORMAP) -> Image.Image:
    """The heat map, coloured with a matplotlib colormap, blended over the model's view."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, not {alpha}")
    heat = colormaps[colormap](explanation.heatmap)[..., :3] * 255.0  # (S, S, 3) in 0..255
    base = np.asarray(explanation.view.convert("RGB"), dtype=np.float32)
    blended = (1.0 - alpha) * base + alpha * heat
    return Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8), mode="RGB")


def _unit_range(cam: np.ndarray) -> np.ndarray:
    # ReLU'd already; bilinear upsampling keeps it >= 0. Scale so the peak is 1; a map with no
    # positive evidence stays all zeros (no 0/0).
    cam = np.nan_to_num(cam, nan=0.0, posinf=0.0, neginf=0.0).clip(min=0.0)
    peak = float(cam.max())
    return (cam / peak if peak > 0 else np.zeros_like(cam)).clip(0.0, 1.0).astype(np.float32)


# --- the private view -------------------------------------------------------------------------


def _explainable_view(loaded: LoadedModel, path: str, layout: str) -> tuple[nn.Module, nn.Module]:
    """A private view and the module in it whose output is the (N, C, H, W) map Grad-CAM uses."""
    if layout not in LAYOUTS:
        raise ZooScopeError(f"Unknown feature layout '{layout}' for {loaded.name}; expected one of {LAYOUTS}.")
    view = private_view(loaded)
    parent, key = resolve_layer(view, path, loaded.name)
    target = getattr(parent, key)
    if layout == "nchw":
        return view, target
    tap = _NCHWTap(target, layout)
    setattr(parent, key, tap)  # in the view only
    return view, tap.to_nchw


# --- layout adapters: the forward is unchanged, only a (N, C, H, W) tensor appears for captum ---


class _ToNCHW(nn.Module):
    """(N, H, W, C) channels-last maps, or (N, H*W, C) square patch-token grids -> (N, C, H, W)."""

    def __init__(self, layout: str):
        super().__init__()
        self.layout = layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "nhwc":
            return x.permute(0, 3, 1, 2)
        n, length, c = x.shape
        side = math.isqrt(length)
        if side * side != length:
            raise ZooScopeError(f"{length} patch tokens do not form a square grid.")
        return x.transpose(1, 2).reshape(n, c, side, side)


class _NCHWTap(nn.Module):
    """Runs `inner`, routes its spatial output through `to_nchw` (the layer Grad-CAM hooks) and
    straight back to the original layout. For "tokens" the leading class token goes around the
    grid untouched. Values and shapes out are exactly what `inner` gave."""

    def __init__(self, inner: nn.Module, layout: str):
        super().__init__()
        self.inner = inner
        self.layout = layout
        self.to_nchw = _ToNCHW(layout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        if self.layout == "nhwc":
            return self.to_nchw(out).permute(0, 2, 3, 1)
        class_token, patches = out[:, :1], out[:, 1:]
        grid = self.to_nchw(patches)
        return torch.cat([class_token, grid.flatten(2).transpose(1, 2)], dim=1)
