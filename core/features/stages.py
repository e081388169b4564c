"""Features from every stage of a backbone, not only the penultimate layer: what transfers.

Early stages respond to edges and textures, late ones to ImageNet's objects (Yosinski et al. 2014),
so on images unlike ImageNet a middle stage can describe them better than the layer Classify and
Features use. Each stage's output is pooled to one vector per image:

- maps (N, C, H, W), or Swin's (N, H, W, C): the average over space;
- token sequences (ViT's blocks): the class token where there is one, else the tokens' mean;

and the penultimate layer (what the head reads) is the last point. One forward pass, with a hook
on each stage end (the family table's `stages`, read by core.inside.anatomy), gives every stage's
vectors at once: probing a network never runs it more than once per image.

Hooks go on a private view (core.models.views), never on the shared, cached model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
from PIL import Image

from core.classify import predict
from core.errors import ZooScopeError
from core.features.backbone import head_path
from core.images import decode_image
from core.inside.anatomy import anatomy, token_grid_side
from core.models.family_paths import get_layer
from core.models.loading import LoadedModel
from core.models.views import private_view
from core.preprocessing import decode_side
from core.progress import Progress

PENULTIMATE = "penultimate"


@dataclass(frozen=True)
class StagePoint:
    """A place in the network to take features from, in network order."""

    name: str  # the module path that ends the stage ("layer3", "blocks.5"), or PENULTIMATE
    index: int  # its position among the points, from 0
    count: int  # how many points the network has
    layout: str  # "nchw", "nhwc", "tokens" or "vector": how its output is pooled
    dim: int  # the pooled vector's length

    @property
    def relative_depth(self) -> float:
        """Where it sits, from near 0 (the first stage) to 1 (the penultimate layer): backbones compare."""
        return (self.index + 1) / self.count

    @property
    def label(self) -> str:
        return f"{self.index + 1}. {self.name}"


def pool(output: torch.Tensor, layout: str) -> torch.Tensor:
    """One stage's batch output as (N, D) vectors."""
    if layout == "nchw":
        return output.mean(dim=(2, 3))
    if layout == "nhwc":
        return output.mean(dim=(1, 2))
    if layout == "tokens":
        length = output.shape[1]
        side = token_grid_side(length)
        has_class_token = side is not None and length == side * side + 1
        return output[:, 0] if has_class_token else output.mean(dim=1)
    return output.flatten(1)


def _first_tensor(value: object) -> torch.Tensor:
    while isinstance(value, tuple | list):
        value = value[0]
    if not isinstance(value, torch.Tensor):
        raise ZooScopeError(f"A stage's output is a {type(value).__name__}, not a tensor: no features to take.")
    return value


def stage_points(loaded: LoadedModel) -> list[StagePoint]:
    """`loaded`'s stage ends (the family table's, in network order), then its penultimate layer.

    ZooScopeError for a family with no linear head (squeezenet): it has no penultimate layer here.
    """
    spec = loaded.spec
    head = get_layer(loaded.module, head_path(spec), spec.name)
    if not isinstance(head, nn.Linear):
        raise ZooScopeError(f"{spec.name} has no linear classifier, so it has no penultimate layer to compare with.")
    stages = [(stage.name, stage.layout, int(stage.channels or 0)) for stage in anatomy(spec.name).stages]
    points = [*stages, (PENULTIMATE, "vector", int(head.in_features))]
    return [
        StagePoint(name=point, index=index, count=len(points), layout=layout, dim=dim)
        for index, (point, layout, dim) in enumerate(points)
    ]


def renumbered(points: Sequence[StagePoint]) -> list[StagePoint]:
    """`points` with their positions and count made consecutive again (after some were dropped)."""
    return [
        StagePoint(name=point.name, index=index, count=len(points), layout=point.layout, dim=point.dim)
        for index, point in enumerate(points)
    ]


@dataclass(frozen=True, eq=False)
class StageFeatures:
    """Every point's pooled features for the same images, in the images' order."""

    model: str
    points: tuple[StagePoint, ...]
    features: dict[str, torch.Tensor]  # point name -> (N, dim) float32 on the CPU
    failures: tuple[tuple[int, str], ...] = ()  # (position in the input, why) for images that did not decode

    @property
    def penultimate(self) -> torch.Tensor:
        return self.features[PENULTIMATE]


class _Taps:
    """Hooks on a private view: each stage end's output pooled on the way, and the head's input."""

    def __init__(self, view: nn.Module, points: Sequence[StagePoint], head: str, model: str):
        self.pooled: dict[str, torch.Tensor] = {}
        self._handles = [
            get_layer(view, point.name, model).register_forward_hook(self._keep(point))
            for point in points
            if point.name != PENULTIMATE
        ]
        self._handles.append(get_layer(view, head, model).register_forward_pre_hook(self._keep_input))

    def _keep(self, point: StagePoint) -> Callable:
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            self.pooled[point.name] = pool(_first_tensor(output).float(), point.layout).cpu()

        return hook

    def _keep_input(self, module: nn.Module, args: tuple) -> None:
        self.pooled[PENULTIMATE] = _first_tensor(args).float().flatten(1).cpu()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def stage_features(
    loaded: LoadedModel,
    blobs: Sequence[bytes],
    *,
    batch_size: int = 16,
    progress: Progress | None = None,
    before_batch: Callable[[], None] | None = None,
) -> StageFeatures:
    """Every stage's pooled features of encoded images through `loaded` (its weights, its preprocessing):
    one forward pass per batch. An image that does not decode is reported in `failures` and left out.

    Where the last stage's vectors are the penultimate layer's own (ResNet's layer4 and EfficientNet's
    last convolution are only pooled before the head), that stage is dropped: it is the same point.
    `before_batch` runs before each batch (the job queue's give_way).
    """
    spec = loaded.spec
    points = stage_points(loaded)
    side = decode_side([loaded.preprocess])
    view = private_view(loaded)
    taps = _Taps(view, points, head_path(spec), spec.name)
    chunks: dict[str, list[torch.Tensor]] = {point.name: [] for point in points}
    failures: list[tuple[int, str]] = []
    try:
        for start in range(0, len(blobs), batch_size):
            if before_batch:
                before_batch()
            images: list[Image.Image] = []
            for offset, data in enumerate(blobs[start : start + batch_size]):
                try:
                    images.append(decode_image(data, min_side=side))
                except ZooScopeError as error:
                    failures.append((start + offset, str(error)))
            if images:
                with torch.inference_mode():
                    view(predict.preprocess(loaded, images).to(loaded.device))
                for point in points:
                    chunks[point.name].append(taps.pooled[point.name])
            if progress:
                done = min(start + batch_size, len(blobs))
                progress(done, len(blobs), f"Features from every stage: {done} of {len(blobs)} images")
    finally:
        taps.remove()
    features = {
        name: torch.cat(parts) if parts else torch.empty(0, point.dim)
        for (name, parts), point in zip(chunks.items(), points, strict=True)
    }
    if len(points) > 1 and _same(features[points[-2].name], features[PENULTIMATE]):
        del features[points[-2].name]
        points = [*points[:-2], points[-1]]
    return StageFeatures(spec.name, tuple(renumbered(points)), features, tuple(failures))


def _same(stage: torch.Tensor, penultimate: torch.Tensor) -> bool:
    return stage.shape == penultimate.shape and stage.numel() > 0 and torch.allclose(stage, penultimate, atol=1e-5)
