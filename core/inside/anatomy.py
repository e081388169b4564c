"""A model's anatomy, from the model built on the meta device: no weights, no memory, every
catalogue model offline.

- Stages are where the family table (core.models.families, read through core.models.family_paths)
  says each stage ends; a stage is everything the network runs after the previous stage's end, up
  to and including its own. Everything after the last stage is the head.
- Blocks are the modules a stage runs one after another (a container such as ResNet's `layer1`
  is opened: its Bottlenecks are the blocks).
- Parameters come from the modules themselves (exact, and every parameter counted once, in the
  stage that first runs it); FLOPs and shapes from one traced pass on meta tensors
  (core.inside.meta_trace). FLOPs count a multiply-add as 2; torchvision's `_ops` metadata
  ("GFLOPS") counts multiply-adds, so `gflops` here is FLOPs / 2e9, in torchvision's convention.
- Skip connections, receptive fields and depth come from that same graph (core.inside.dataflow);
  where each module ran, from its nodes' module stack.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd
import torch
import torch.nn as nn

from core import runtime
from core.errors import ZooScopeError
from core.inside import dataflow
from core.inside.meta_trace import ModuleCall, trace
from core.models.building import build_on_meta
from core.models.catalog import ModelSpec, get_spec
from core.models.family_paths import expand_patterns

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


@dataclass(frozen=True)
class Block:
    path: str
    kind: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    params: int
    flops: int
    skips: int = 0  # skip connections around this block's layers
    skip_kind: str | None = None  # "add" or "concat"

    @property
    def gflops(self) -> float:
        return self.flops / 2e9


@dataclass(frozen=True)
class Stage:
    index: int
    name: str  # the module path that ends it ("layer1", "features.6"), or "head"
    kind: str  # what it runs, e.g. "3 Bottleneck" or "Conv2d, BatchNorm2d, ReLU, MaxPool2d"
    output_shape: tuple[int, ...]  # without the batch dimension
    layout: str  # "nchw", "nhwc", "tokens" or "vector"
    params: int
    flops: int
    receptive_field: float | None  # pixels; math.inf for the whole image; None where unknown
    skips: int
    blocks: tuple[Block, ...] = ()

    @property
    def gflops(self) -> float:
        return self.flops / 2e9

    @property
    def channels(self) -> int | None:
        if self.layout == "nchw":
            return self.output_shape[0]
        return self.output_shape[-1] if self.output_shape else None

    @property
    def grid(self) -> tuple[int, int] | None:
        """The spatial size of its output (rows, columns): the patch grid for tokens."""
        if self.layout == "nchw":
            return (self.output_shape[1], self.output_shape[2]) if len(self.output_shape) >= 3 else None
        if self.layout == "nhwc":
            return (self.output_shape[0], self.output_shape[1]) if len(self.output_shape) >= 2 else None
        if self.layout == "tokens":
            side = token_grid_side(self.output_shape[0])
            return (side, side) if side else None
        return None


@dataclass(frozen=True)
class Anatomy:
    model: str
    family: str
    input_size: int
    params: int  # the network as it runs
    auxiliary_params: int  # training-only auxiliary classifiers the weights carry (Inception, GoogLeNet)
    flops: int
    skip_connections: int
    depth: int  # weight layers on the longest path (ResNet-50: 50)
    stages: tuple[Stage, ...]
    head: Stage
    skips_by_kind: dict[str, int] = field(default_factory=dict)
    ops: tuple[dataflow.Op, ...] = ()  # the traced graph, for the "layers" depth of the drawing

    @property
    def gflops(self) -> float:
        return self.flops / 2e9

    @property
    def blocks(self) -> int:
        return sum(len(stage.blocks) for stage in self.stages)

    @property
    def widest_stage(self) -> Stage:
        """The stage with the most output channels (the first of equals), as the stage table shows it."""
        return max(self.stages, key=lambda stage: stage.channels or 0)

    @property
    def widest(self) -> int:
        return self.widest_stage.channels or 0

    def as_json(self) -> dict:
        return {
            "model": self.model,
            "family": self.family,
            "input_size": self.input_size,
            "params": self.params,
            "auxiliary_params": self.auxiliary_params,
            "gflops": round(self.gflops, 4),
            "skip_connections": self.skip_connections,
            "depth": self.depth,
            "stages": [_stage_json(stage) for stage in self.stages],
            "head": _stage_json(self.head),
        }

    def stages_frame(self, *, head: bool = True) -> pd.DataFrame:
        """One row per stage (and the head): the table Inside and `python -m core inspect` show."""
        rows = [
            {
                "stage": "head" if stage is self.head else str(stage.index + 1),
                "name": "" if stage is self.head else stage.name,
                "kind": stage.kind,
                "output_shape": " x ".join(map(str, stage.output_shape)),
                "blocks": len(stage.blocks),
                "params": stage.params,
                "params_m": stage.params / 1e6,
                "gflops": stage.gflops,
                "receptive_field": _receptive_text(stage.receptive_field),
                "skip_connections": stage.skips,
            }
            for stage in (*self.stages, self.head)
            if head or stage is not self.head
        ]
        return pd.DataFrame(rows)


def _stage_json(stage: Stage) -> dict:
    field_ = stage.receptive_field
    return {
        "name": stage.name,
        "kind": stage.kind,
        "output_shape": list(stage.output_shape),
        "layout": stage.layout,
        "params": stage.params,
        "gflops": round(stage.gflops, 4),
        "receptive_field": None if field_ is None else ("image" if math.isinf(field_) else int(field_)),
        "skip_connections": stage.skips,
        "blocks": [
            {
                "name": block.path,
                "kind": block.kind,
                "output_shape": list(block.output_shape),
                "params": block.params,
                "gflops": round(block.gflops, 4),
                "skip_connections": block.skips,
            }
            for block in stage.blocks
        ],
    }


def _receptive_text(value: float | None) -> str:
    if value is None:
        return ""
    return "whole image" if math.isinf(value) else f"{value:.0f} px"


def token_grid_side(length: int) -> int | None:
    """The side of the square patch grid in `length` tokens (a leading class token allowed)."""
    for patches in (length, length - 1):
        side = math.isqrt(max(patches, 0))
        if side and side * side == patches:
            return side
    return None


# --- putting it together ----------------------------------------------------------------------------


def _on_meta(spec: ModelSpec) -> nn.Module:
    model = build_on_meta(spec)
    if not all(p.is_meta for p in model.parameters()):
        model = model.to("meta")  # builders that compute while constructing keep small tensors real (regnet)
    return model.eval()


def _kind(classes: list[str]) -> str:
    counts = Counter(classes)
    return ", ".join(name if counts[name] == 1 else f"{counts[name]} {name}" for name in dict.fromkeys(classes))


def _layout(shape: tuple[int, ...], family_layout: str) -> str:
    if len(shape) == 3:
        return "nhwc" if family_layout == "nhwc" else "nchw"
    if len(shape) == 2:
        return "tokens"
    return "vector"


def _own_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters(recurse=False))


def _auxiliary_params(spec: ModelSpec) -> int:
    """Parameters of the auxiliary classifiers a builder adds for training (GoogLeNet, Inception v3)."""
    if spec.build_kwargs.get("aux_logits") is not False:
        return 0
    with runtime.TORCH_GLOBAL_STATE, torch.device("meta"):
        with_aux = spec.builder(weights=None, **{**spec.build_kwargs, "aux_logits": True})
        without = spec.build()
    return sum(p.numel() for p in with_aux.parameters()) - sum(p.numel() for p in without.parameters())


@functools.cache
def anatomy(name: str) -> Anatomy:
    """The anatomy of catalogue model `name` (cached: the first call per model builds and traces it)."""
    spec = get_spec(name)
    model = _on_meta(spec)
    traits = spec.traits
    if not traits.stages:
        raise ZooScopeError(f"The family table has no stages for {name} ({spec.family} models).")
    ends = expand_patterns(model, traits.stages, name)
    calls, total_flops, flow = trace(model, spec.input_size)
    modules = dict(model.named_modules())

    boundaries = [calls[path].last for path in ends]
    if boundaries != sorted(boundaries):
        raise ZooScopeError(f"The stages of {name} in the family table are not in network order.")

    def stage_of(event: int) -> int:
        """Index of the stage running at `event`; len(ends) for the head."""
        return next((index for index, end in enumerate(boundaries) if event <= end), len(ends))

    # Parameters: each module's own, in the stage that first runs it (shared modules count once).
    # A module never called is used through its parent (Swin's attention passes its Linear
    # layers' weights to a function): its parameters go where the nearest caller ran.
    params = [0] * (len(ends) + 1)
    for path, module in modules.items():
        caller = next((p for p in _ancestry(path) if p in calls), None)
        params[stage_of(calls[caller].first) if caller is not None else len(ends)] += _own_params(module)

    # Skip connections: counted in the innermost block (or stage) around what they bypass.
    skip_stage: Counter[int] = Counter()
    skips_in: Counter[str] = Counter()
    kinds: dict[str, str] = {}
    for skip in flow.skips:
        inner = next((path for path in reversed(skip.scope) if path in calls), "")
        skip_stage[stage_of(calls[inner].first) if inner in calls else 0] += 1
        for path in skip.scope:
            skips_in[path] += 1
            kinds.setdefault(path, skip.kind)

    stages = []
    start = 0
    for index, end in enumerate([*boundaries, max(call.last for call in calls.values())]):
        blocks = tuple(
            _block(path, modules, calls, skips_in, kinds) for path in _blocks_between(start, end, calls, modules)
        )
        is_head = index == len(ends)
        name_ = "head" if is_head else ends[index]
        shape = calls["" if is_head else name_].output_shape  # the head's: the logits
        flops_end = total_flops if is_head else calls[name_].flops_after
        flops_start = calls[ends[index - 1]].flops_after if index else 0
        stages.append(
            Stage(
                index=index,
                name=name_,
                kind=_kind([block.kind for block in blocks]),
                output_shape=shape,
                layout=_layout(shape, traits.cam_layout),
                params=params[index],
                flops=flops_end - flops_start,
                receptive_field=None if is_head else flow.receptive_fields.get(name_),
                skips=skip_stage[index],
                blocks=blocks,
            )
        )
        start = end
    return Anatomy(
        model=name,
        family=spec.family,
        input_size=spec.input_size,
        params=sum(p.numel() for p in model.parameters()),
        auxiliary_params=_auxiliary_params(spec),
        flops=total_flops,
        skip_connections=len(flow.skips),
        depth=flow.depth,
        stages=tuple(stages[:-1]),
        head=stages[-1],
        skips_by_kind=dict(Counter(skip.kind for skip in flow.skips)),
        ops=flow.ops,
    )


def _ancestry(path: str) -> list[str]:
    """`path`, then each module around it, out to the model ("")."""
    parts = path.split(".") if path else []
    return [".".join(parts[:cut]) for cut in range(len(parts), -1, -1)]


def _blocks_between(start: int, end: int, calls: dict[str, ModuleCall], modules: dict[str, nn.Module]) -> list[str]:
    """The outermost modules that run entirely in (start, end], in order, containers opened."""

    def inside(path: str) -> bool:
        call = calls.get(path)
        return call is not None and start < call.first and call.last <= end

    def ancestors(path: str) -> list[str]:
        parts = path.split(".")
        return [".".join(parts[:cut]) for cut in range(len(parts))]  # "" (the model) first

    outermost = [path for path in calls if path and inside(path) and not any(map(inside, ancestors(path)))]
    blocks: list[str] = []
    for path in sorted(outermost, key=lambda p: calls[p].first):
        blocks += _opened(path, calls, modules)
    return blocks


def _run_children(path: str, calls: dict[str, ModuleCall], modules: dict[str, nn.Module]) -> list[str]:
    """The children of `path` that ran, in order; a ModuleList (never called itself) stands for its items."""
    found = []
    for key in modules[path]._modules:
        child = f"{path}.{key}" if path else key
        if child in calls:
            found.append(child)
        elif child in modules and isinstance(modules[child], _CONTAINERS):
            found += _run_children(child, calls, modules)
    return sorted(found, key=lambda name: calls[name].first)


def _repeats(path: str, calls: dict[str, ModuleCall], modules: dict[str, nn.Module]) -> bool:
    """A container whose children are blocks of one kind (ResNet's layer1, MaxViT's layers)."""
    children = _run_children(path, calls, modules)
    return (
        isinstance(modules[path], _CONTAINERS)
        and bool(children)
        and len({type(modules[child]) for child in children}) == 1
        and next(modules[children[0]].children(), None) is not None
    )


def _opened(path: str, calls: dict[str, ModuleCall], modules: dict[str, nn.Module]) -> list[str]:
    """A container of blocks becomes its blocks, also when a module wraps just that container
    (MaxViT's MaxVitBlock around its ModuleList of layers)."""
    if _repeats(path, calls, modules):
        return _run_children(path, calls, modules)
    # Only a list the wrapper iterates itself (never called): a called Sequential inside a block
    # (MobileNetV3's InvertedResidual.block) is that block's layers, not blocks.
    direct = [f"{path}.{key}" for key in modules[path]._modules]
    if len(direct) == 1 and direct[0] not in calls and _repeats(direct[0], calls, modules):
        return _run_children(direct[0], calls, modules)
    return [path]


def _block(
    path: str, modules: dict[str, nn.Module], calls: dict[str, ModuleCall], skips_in: Counter, kinds: dict[str, str]
) -> Block:
    module, call = modules[path], calls[path]
    return Block(
        path=path,
        kind=type(module).__name__,
        input_shape=call.input_shape,
        output_shape=call.output_shape,
        params=sum(p.numel() for p in module.parameters()),
        flops=call.flops_after - call.flops_before,
        skips=skips_in[path],
        skip_kind=kinds.get(path),
    )


# --- tables over several models ---------------------------------------------------------------------

# EfficientNet's compound-scaled series (Tan & Le, 2019): b0 to b7, and the Lite models.
COMPOUND_SCALED = re.compile(r"^efficientnet_(b|lite)\d$")


def stages_long_frame(anatomies: list[Anatomy]) -> pd.DataFrame:
    """One row per (model, stage), head included: for the parameters-per-stage chart."""
    rows = []
    for found in anatomies:
        for stage in (*found.stages, found.head):
            head = stage is found.head
            rows.append(
                {
                    "model": found.model,
                    "stage": "head" if head else str(stage.index + 1),
                    "order": stage.index,
                    "name": "head" if head else stage.name,
                    "params_m": stage.params / 1e6,
                    "gflops": stage.gflops,
                    "output_shape": " x ".join(map(str, stage.output_shape)),
                }
            )
    return pd.DataFrame(rows)


def summary_row(found: Anatomy) -> dict:
    """Depth, width and resolution of one model, with its size and compute."""
    return {
        "model": found.model,
        "family": found.family,
        "depth": found.depth,
        "blocks": found.blocks,
        "width": found.widest,  # the stage table's widest output, every stage counted
        "widest_stage": found.widest_stage.index + 1,
        "resolution": found.input_size,
        "params_m": found.params / 1e6,
        "gflops": found.gflops,
        "skip_connections": found.skip_connections,
        "stages": len(found.stages),
    }


def compound_scaling_frame(names: list[str]) -> pd.DataFrame:
    """EfficientNet b0-b7 and Lite0-2 from the catalogue: depth (weight layers on the longest
    path), width (channels of the widest stage before the final 1x1 convolution), resolution (the
    input size) and ImageNet top-1, each model's own."""
    rows = []
    for name in sorted(name for name in names if COMPOUND_SCALED.match(name)):
        spec = get_spec(name)
        found = anatomy(name)
        row = summary_row(found)
        # Width before the final 1x1 convolution (the last stage in both layouts): the Lite models fix
        # that convolution at 1280 channels, so counting it would hide their scaling.
        body_width = max((stage.channels or 0) for stage in found.stages[:-1])
        row.update(series="EfficientNet-Lite" if "lite" in name else "EfficientNet", acc1=spec.acc1, width=body_width)
        rows.append(row)
    return pd.DataFrame(rows)
