"""What each stage sees: a photo's real activations at the end of every stage, and for ViT where
the class token attends (attention rollout).

Forward hooks go on a private view of the shared model (core/views.py), never on the cached
module: other sessions run forwards on that one at the same moment. Each hook keeps only what
the page shows (the mean absolute activation over channels and the most active channels), so no
stage's full activation outlives the forward pass.

Attention rollout (Abnar & Zuidema, "Quantifying attention flow in transformers", 2020): each
layer's attention, averaged over heads, mixed half and half with the identity for the residual
connection around it, rows renormalised, multiplied through the layers; the class token's row,
over the patch tokens, is where the class token's information comes from. torchvision's
EncoderBlock asks its attention for no weights, so in the view (only there) each
MultiheadAttention is wrapped to return them.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from core import preprocessing
from core.errors import ZooScopeError
from core.inside.anatomy import Anatomy, Stage, anatomy, token_grid_side
from core.models import footprints
from core.models.family_paths import get_layer, set_layer
from core.models.loading import LoadedModel
from core.models.views import private_view

TOP_CHANNELS = 8
SPARE_VIEWS = 2  # views kept per shared model for the next photo


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no plain ==
class StageMap:
    index: int
    stage: str
    mean: np.ndarray = field(repr=False)  # (H, W) float32: mean |activation| over channels
    channels: np.ndarray = field(repr=False)  # (k, H, W) float32: the most active channels
    channel_ids: tuple[int, ...] = ()
    total_channels: int = 0


@dataclass(frozen=True, eq=False)
class StageMaps:
    model: str
    view: Image.Image = field(repr=False)  # the RGB crop the model saw, before normalisation
    stages: tuple[StageMap, ...] = ()
    label: str = ""  # the model's top-1 for the photo
    probability: float = 0.0
    rollout: np.ndarray | None = field(default=None, repr=False)  # (g, g) for ViT: class-token rollout

    def arrays(self) -> dict[str, np.ndarray]:
        """`input` (the H x W x 3 uint8 crop), then each stage's mean map, in network order."""
        return {"input": np.asarray(self.view.convert("RGB"), dtype=np.uint8)} | {
            stage.stage: stage.mean for stage in self.stages
        }

    def save(self, path: str | Path) -> None:
        with open(path, "wb") as file:
            np.savez_compressed(file, allow_pickle=False, **self.arrays())


def has_rollout(found: Anatomy) -> bool:
    """A class token to follow: token stages whose length is a square grid plus one."""
    return any(stage.layout == "tokens" and _class_token(stage) for stage in found.stages)


def _class_token(stage: Stage) -> bool:
    length = stage.output_shape[0]
    side = token_grid_side(length)
    return side is not None and side * side == length - 1


def stage_maps_memory_mb(loaded: LoadedModel) -> float:
    """What one photo's stage maps will hold (core.models.footprints), the weights being the shared model's."""
    return footprints.stage_maps_mb(input_size=loaded.spec.input_size, family=loaded.spec.family)


def stage_maps(loaded: LoadedModel, image: Image.Image, top_channels: int = TOP_CHANNELS) -> StageMaps:
    """Every stage's activations for `image` through `loaded` (its weights, its preprocessing)."""
    found = anatomy(loaded.name)
    captured: dict[int, StageMap] = {}
    batch = preprocessing.model_batch([image], loaded.preprocess).to(loaded.device)
    with _borrowed_view(loaded, rollout=has_rollout(found)) as (view, taps):
        handles = [
            get_layer(view, stage.name, loaded.name).register_forward_hook(_capture(stage, captured, top_channels))
            for stage in found.stages
        ]
        try:
            with torch.inference_mode():
                probabilities = view(batch).float().softmax(dim=1)[0]
            weights = [tap.weights for tap in taps if tap.weights is not None]
        finally:
            for handle in handles:
                handle.remove()
    top = int(probabilities.argmax())
    return StageMaps(
        model=loaded.name,
        view=preprocessing.model_view(image, loaded.preprocess),
        stages=tuple(captured[stage.index] for stage in found.stages),
        label=loaded.categories[top],
        probability=float(probabilities[top]),
        rollout=_rollout(weights) if weights else None,
    )


# Building a view costs about as much as a forward pass (timm's builders more), so views are
# lent out one caller at a time and kept for the next photo: per shared module (weakly: a model
# the pool unloads takes its views with it). Hooks are removed after each use; a view is never
# used by two callers at once.
_spare_views: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_spare_lock = threading.Lock()


@contextmanager
def _borrowed_view(loaded: LoadedModel, *, rollout: bool) -> Iterator[tuple[nn.Module, list]]:
    with _spare_lock:
        spare = _spare_views.setdefault(loaded.module, [])
        lent = spare.pop() if spare else None
    if lent is None:
        view = private_view(loaded)
        lent = (view, _tap_attention(view) if rollout else [])
    try:
        yield lent
    finally:
        with _spare_lock:
            if len(spare) < SPARE_VIEWS:
                spare.append(lent)


def _first_tensor(value: object) -> torch.Tensor:
    while isinstance(value, (tuple, list)):
        value = value[0]
    if not isinstance(value, torch.Tensor):
        raise ZooScopeError(f"A stage's output is a {type(value).__name__}, not a tensor: no map to draw.")
    return value


def as_maps(activation: torch.Tensor, layout: str) -> torch.Tensor:
    """One image's stage output as (C, H, W) maps: NHWC permuted, patch tokens put on their grid
    (a leading class token dropped)."""
    if layout == "nchw":
        return activation
    if layout == "nhwc":
        return activation.permute(2, 0, 1)
    if layout == "tokens":
        length, width = activation.shape
        side = token_grid_side(length)
        if side is None:
            raise ZooScopeError(f"{length} tokens do not make a square grid of patches.")
        patches = activation[length - side * side :]
        return patches.transpose(0, 1).reshape(width, side, side)
    raise ZooScopeError(f"A stage with a '{layout}' output has no maps to show.")


def _capture(stage: Stage, captured: dict[int, StageMap], top_channels: int):
    def hook(module: nn.Module, args: tuple, output: object) -> None:
        maps = as_maps(_first_tensor(output)[0].float(), stage.layout).abs()
        scores = maps.mean(dim=(1, 2))
        top = scores.topk(min(top_channels, scores.numel())).indices
        captured[stage.index] = StageMap(
            index=stage.index,
            stage=stage.name,
            mean=maps.mean(dim=0).cpu().numpy(),
            channels=maps[top].cpu().numpy(),
            channel_ids=tuple(int(i) for i in top),
            total_channels=int(scores.numel()),
        )

    return hook


# --- attention rollout -------------------------------------------------------------------------------


class _AttentionWeights(nn.Module):
    """A MultiheadAttention that also keeps its weights (averaged over heads); same output."""

    def __init__(self, attention: nn.MultiheadAttention):
        super().__init__()
        self.attention = attention
        self.weights: torch.Tensor | None = None

    def forward(self, query, key, value, need_weights: bool = True, **kwargs):
        kwargs["average_attn_weights"] = True
        output, weights = self.attention(query, key, value, need_weights=True, **kwargs)
        self.weights = weights
        return output, weights if need_weights else None


def _tap_attention(view: nn.Module) -> list[_AttentionWeights]:
    paths = [path for path, module in view.named_modules() if isinstance(module, nn.MultiheadAttention)]
    taps = []
    for path in paths:
        attention = view.get_submodule(path)
        assert isinstance(attention, nn.MultiheadAttention)  # found by its type just above
        tap = _AttentionWeights(attention)
        set_layer(view, path, tap)  # in the view only
        taps.append(tap)
    return taps


def _rollout(weights: list[torch.Tensor]) -> np.ndarray:
    """The class token's rolled-out attention over the patch grid, scaled to [0, 1]."""
    rolled: torch.Tensor | None = None
    for layer in weights:
        attention = layer[0].float()
        attention = 0.5 * attention + 0.5 * torch.eye(attention.shape[-1], device=attention.device)
        attention = attention / attention.sum(dim=-1, keepdim=True)
        rolled = attention if rolled is None else attention @ rolled
    if rolled is None:
        raise ZooScopeError("The model has no attention layers to roll out.")
    patches = rolled[0, 1:]
    side = math.isqrt(patches.numel())
    grid = patches.reshape(side, side).cpu().numpy()
    return unit_range(grid)


# --- pictures ------------------------------------------------------------------------------------------


def unit_range(values: np.ndarray) -> np.ndarray:
    """`values` scaled to [0, 1] (a constant map becomes zeros)."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float32))
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def heat_image(values: np.ndarray, size: int, colormap: str = "viridis") -> Image.Image:
    """A 2-D map as a `size` x `size` colour picture: enlarged by nearest neighbour (each cell stays
    visible), reduced by averaging (no aliasing)."""
    from matplotlib import colormaps

    rgb = (colormaps[colormap](unit_range(values))[..., :3] * 255).astype(np.uint8)
    enlarging = size >= max(values.shape)
    return Image.fromarray(rgb, mode="RGB").resize(
        (size, size), Image.Resampling.NEAREST if enlarging else Image.Resampling.BOX
    )


def overlay(view: Image.Image, values: np.ndarray, alpha: float = 0.55, colormap: str = "jet") -> Image.Image:
    """A map stretched over the crop the model saw (bilinear) and blended with it."""
    from matplotlib import colormaps

    base = view.convert("RGB")
    heat = Image.fromarray((unit_range(values) * 255).astype(np.uint8)).resize(base.size, Image.Resampling.BILINEAR)
    colour = colormaps[colormap](np.asarray(heat, dtype=np.float32) / 255.0)[..., :3] * 255.0
    blended = (1.0 - alpha) * np.asarray(base, dtype=np.float32) + alpha * colour
    return Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8), mode="RGB")


def channel_grid(stage: StageMap, columns: int = 4, cell: int = 72, gap: int = 3) -> Image.Image:
    """The stage's most active channels side by side (each scaled to its own range), in rank order."""
    count = len(stage.channels)
    rows = max(1, math.ceil(count / columns))
    grid = Image.new("RGB", (columns * cell + (columns - 1) * gap, rows * cell + (rows - 1) * gap), "white")
    for position, values in enumerate(stage.channels):
        row, column = divmod(position, columns)
        grid.paste(heat_image(values, cell), (column * (cell + gap), row * (cell + gap)))
    return grid
