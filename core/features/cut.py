"""A network cut at a stage end: the stage's pooled features, from a smaller, faster network.

Where a middle stage fits a person's images better than the penultimate layer (core.features.probes),
fast mode can train its head on that stage's features. Nothing after the stage is needed for them,
so the network is cut there: torchvision's fx feature extractor traces a private view
(core.models.views) up to the stage's end and drops every module after it, and the stage's pooling
(core.features.stages.pool) turns its output into one vector per image, exactly as the probes saw it.

The cut shares the shared model's tensors (nothing is copied) and holds fewer of them. PENULTIMATE
is no cut: the backbone without its head (core.features.backbone.backbone_view).
"""

from __future__ import annotations

import copy
from typing import TypeGuard

import torch
import torch.fx as fx
import torch.nn as nn

from core.errors import ZooScopeError
from core.features.backbone import backbone_view
from core.features.stages import PENULTIMATE, StagePoint, pool, stage_points
from core.models.building import build_on_meta
from core.models.catalog import ModelSpec
from core.models.loading import LoadedModel
from core.models.views import private_view
from core.runtime import TORCH_GLOBAL_STATE

_OUT = "stage"  # the traced graph's one output


class StageCut(nn.Module):
    """The network up to a stage's end (a traced graph of the modules it needs), then that stage's pooling:
    a preprocessed batch (N, 3, S, S) -> (N, dim)."""

    def __init__(self, body: nn.Module, point: StagePoint):
        super().__init__()
        self.body = body
        self.stage = point.name
        self.layout = point.layout
        self.dim = point.dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool(self.body(x)[_OUT], self.layout)


def is_cut(stage: str | None) -> TypeGuard[str]:
    """Whether features taken from `stage` need a cut network (None and PENULTIMATE do not)."""
    return stage not in (None, PENULTIMATE)


_points_by_model: dict[str, tuple[StagePoint, ...]] = {}


def spec_stage_points(spec: ModelSpec) -> list[StagePoint]:
    """`spec`'s stage points (stages.stage_points), from its architecture alone: no weights loaded."""
    points = _points_by_model.get(spec.name)
    if points is None:  # every weights version of a model has the same architecture, so the same points
        meta = LoadedModel(spec, build_on_meta(spec), nn.Identity(), torch.device("cpu"))
        points = _points_by_model.setdefault(spec.name, tuple(stage_points(meta)))
    return list(points)


def stage_point(spec: ModelSpec, stage: str) -> StagePoint:
    """The point named `stage` in `spec`, or a ZooScopeError that lists the choices."""
    points = spec_stage_points(spec)
    for point in points:
        if point.name == stage:
            return point
    choices = ", ".join(point.name for point in points)
    raise ZooScopeError(f"{spec.name} has no stage '{stage}' to take features from; choose one of {choices}.")


def feature_dim(spec: ModelSpec, stage: str | None) -> int:
    """How many numbers per image features from `stage` are (the penultimate layer's for None)."""
    return stage_point(spec, stage if is_cut(stage) else PENULTIMATE).dim


def _tracer_kwargs() -> dict:
    """timm's modules that fx must not look inside (TF "same" padding decides on the input's size)."""
    try:
        from timm.layers import get_notrace_functions, get_notrace_modules
    except ImportError:  # no timm models without timm
        return {}
    return {"leaf_modules": list(get_notrace_modules()), "autowrap_functions": list(get_notrace_functions())}


def cut_at(loaded: LoadedModel, stage: str | None) -> nn.Module:
    """A private network giving `stage`'s pooled features (N, dim) of a preprocessed batch, eval and frozen.

    None or PENULTIMATE: the backbone without its head. ZooScopeError for an unknown stage, or where
    this model's graph cannot be traced up to it.
    """
    if not is_cut(stage):
        return backbone_view(loaded).module
    point = stage_point(loaded.spec, stage)
    from torchvision.models.feature_extraction import create_feature_extractor

    view = private_view(loaded)
    try:
        with TORCH_GLOBAL_STATE:  # fx tracing patches torch process-wide
            traced = create_feature_extractor(view, return_nodes={stage: _OUT}, tracer_kwargs=_tracer_kwargs())
            body = _pruned(traced.eval())
    except Exception as error:  # noqa: BLE001 - fx fails in many ways (control flow, untraceable calls)
        raise ZooScopeError(
            f"{loaded.spec.name} can't be cut at {stage}: its graph could not be traced there "
            f"({type(error).__name__}); take features from the penultimate layer instead."
        ) from None
    return StageCut(body, point).eval().requires_grad_(False)


def _pruned(traced: fx.GraphModule) -> fx.GraphModule:
    """`traced`'s eval graph without its shape checks (torch._assert: fx keeps them, and with them every
    layer after the stage that feeds one, as ViT's do), then without what no longer leads to the output,
    holding only the modules it still calls."""
    body = fx.GraphModule(traced, copy.deepcopy(traced.graph), class_name="StageBody")
    for node in list(body.graph.nodes):
        if node.op == "call_function" and node.target is torch._assert:
            body.graph.erase_node(node)
    body.graph.eliminate_dead_code()
    body.delete_all_unused_submodules()
    body.recompile()
    return body


def parameter_count(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())
