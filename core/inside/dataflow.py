"""What a model's data flow graph says: its skip connections and its receptive fields.

The model is traced with torch.fx (the tracer torchvision's feature extraction builds on), with
timm's own "do not trace" modules and functions kept whole, and shapes propagated on the meta
device. Two things are read off the graph:

- skip connections: places where a block's input reaches its output around the block's layers,
  added to it (ResNet's F(x) + x, a projection shortcut included) or concatenated with it
  (DenseNet; ShuffleNet's untouched half). Adds of a parameter (ViT's position embedding) or of
  something made from shapes only (masks) are not skips: both operands must carry the image's data.
- receptive fields: for each node, the size of the input window that can change it, carried
  through convolutions and pooling with the textbook recurrence r' = r + (k - 1) * j, j' = j * s
  (Araujo et al., "Computing receptive fields of convolutional neural networks", Distill 2019),
  per spatial axis, the largest over the branches that meet (Inception, shortcuts). Global
  pooling and attention make it the whole image. Squeeze-excitation's channel gates (a global
  average pooled to 1x1, multiplied back) are left out: they rescale channels, they do not widen
  the window a feature looks at. Functions a library keeps opaque to tracing (Swin's shifted
  window attention) leave it unknown.
"""

from __future__ import annotations

import _operator
import builtins
import math
import operator
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.passes.shape_prop import ShapeProp

from core import runtime

GLOBAL = math.inf  # a receptive field that covers the whole image

_ADDS = {operator.add, operator.iadd, torch.add, "add", "add_", "__add__", "__iadd__"}
_CATS = {torch.cat, torch.concat, torch.concatenate}
# Ops whose output values do not depend on the values of their tensor inputs, only on shapes.
_SHAPE_ONLY_METHODS = {"size", "dim", "new_zeros", "new_ones", "new_empty", "new_full", "numel"}
_SHAPE_ONLY_FUNCTIONS = {torch.zeros_like, torch.ones_like, torch.empty_like, torch.full_like, builtins.getattr}
# Views that pass a tensor's data on untouched (for "the block's input, concatenated with its output").
_VIEW_METHODS = {"chunk", "split", "narrow", "view", "reshape", "contiguous"}
_VIEW_FUNCTIONS = {torch.chunk, torch.split, torch.narrow, operator.getitem, _operator.getitem}
# Ops that mix every position with every other: attention scores and their use.
_GLOBAL_FUNCTIONS = {torch.matmul, torch.bmm, torch.baddbmm, torch.einsum, operator.matmul, F.softmax, torch.softmax}
_GLOBAL_METHODS = {"matmul", "bmm", "softmax", "__matmul__"}
_POOL_FUNCTIONS = {"max_pool2d", "_max_pool2d", "avg_pool2d", "max_pool2d_with_indices"}
_TORCH_MODULES = ("torch", "_operator", "operator", "builtins", "math")


@dataclass(frozen=True)
class Skip:
    """One skip connection: where it joins (`node`), how (`kind`: "add" or "concat"), and the
    module paths around the layers it bypasses (innermost last)."""

    node: str
    kind: str
    scope: tuple[str, ...]


@dataclass(frozen=True)
class Op:
    """One step of the traced graph as drawn at the "layers" depth: plumbing (views, reshapes,
    getitems) folded into the step it feeds from, so edges run between real operations."""

    name: str
    label: str  # "conv1: Conv2d 1x1", "+", "concat", "relu"
    inputs: tuple[str, ...]  # names of the ops it reads (the image is "input")
    scope: tuple[str, ...]  # module paths around it, outermost first
    kind: str = "op"  # "layer" (a module), "add", "concat" or "op"


@dataclass(frozen=True)
class Dataflow:
    skips: tuple[Skip, ...]
    # Module path -> receptive field (pixels, largest axis) of that module's output; GLOBAL for
    # the whole image; absent where unknown.
    receptive_fields: dict[str, float]
    # Weight layers (convolutions, linear layers, attention) on the longest path from image to
    # logits: the number in "ResNet-50", "VGG-16", "DenseNet-121".
    depth: int
    ops: tuple[Op, ...] = ()


class _Tracer(torch.fx.Tracer):
    """torch.fx's tracer, keeping whole what timm registers as not traceable (e.g. its TF-"same"
    padded convolutions, which compute their padding from the input's size).

    While it traces, torch.fx patches torch.nn.Module.__call__ and __getattr__ for the whole process:
    every other visitor's forward pass runs through this tracer's hooks too. For any thread but the
    tracing one they step aside (the module runs, the attribute is returned as it is), so another
    session's forward never becomes a proxy or raises "module is not installed as a submodule".
    """

    def __init__(self):
        from timm.layers import _fx as timm_fx  # timm's registry of untraceable modules and functions
        from torchvision.ops import StochasticDepth

        # StochasticDepth calls a function torchvision keeps opaque to fx; whole, it is plainly
        # pointwise (the identity in eval mode).
        self._leaves = (StochasticDepth, *timm_fx.get_notrace_modules())
        self._tracing_thread = threading.get_ident()
        super().__init__(autowrap_functions=tuple(timm_fx.get_notrace_functions()))

    def trace(self, root, concrete_args=None):
        self._tracing_thread = threading.get_ident()
        return super().trace(root, concrete_args)

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        if threading.get_ident() != self._tracing_thread:
            return forward(*args, **kwargs)  # another session's forward pass: run it for real
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, Any]) -> Any:
        if threading.get_ident() != self._tracing_thread:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, self._leaves) or super().is_leaf_module(module, qualified_name)


class _Propagation(ShapeProp):
    """torch.fx's ShapeProp (each node's output shape into node.meta), telling `after` each node it ran."""

    def __init__(self, module: torch.fx.GraphModule, after: Callable[[torch.fx.Node], None] | None):
        super().__init__(module)
        self.after = after

    def run_node(self, node: torch.fx.Node):
        result = super().run_node(node)
        if self.after is not None:
            self.after(node)
        return result


def trace(
    model: nn.Module, input_size: int, after: Callable[[torch.fx.Node], None] | None = None
) -> torch.fx.GraphModule:
    """`model` as an fx graph, run once on an image-sized zero tensor (on the model's device) to
    fill in every node's output shape; `after(node)` is called as each node has run.

    Under runtime.TORCH_GLOBAL_STATE: two traces at once would each patch torch.nn.Module and restore
    the other's patch, leaving every later forward pass in the process running through a dead tracer.
    """
    with runtime.TORCH_GLOBAL_STATE:
        tracer = _Tracer()
        graph = tracer.trace(model)
        module = torch.fx.GraphModule(tracer.root, graph, type(model).__name__)
        device = next(model.parameters()).device
        with torch.no_grad():
            _Propagation(module, after).propagate(torch.zeros(1, 3, input_size, input_size, device=device))
    return module


def analyse(model: nn.Module, input_size: int, after: Callable[[torch.fx.Node], None] | None = None) -> Dataflow:
    """The skips, receptive fields, depth and drawn ops of `model`; `after` as in `trace`."""
    module = trace(model, input_size, after)
    nodes = list(module.graph.nodes)
    data = _carries_data(nodes)
    ancestors = _data_ancestors(nodes, data)
    skips = tuple(_skips(nodes, data, ancestors))
    return Dataflow(
        skips=skips,
        receptive_fields=_receptive_fields(module, nodes, data, input_size),
        depth=_longest_weighted_path(module, nodes, data),
        ops=tuple(_ops(module, nodes, data)),
    )


# --- data dependence ----------------------------------------------------------------------------


def _inputs(node: torch.fx.Node) -> list[torch.fx.Node]:
    return list(node.all_input_nodes)


def _is_shape_only(node: torch.fx.Node) -> bool:
    if node.op == "call_method":
        return node.target in _SHAPE_ONLY_METHODS
    if node.op == "call_function":
        return node.target in _SHAPE_ONLY_FUNCTIONS
    return node.op == "get_attr"


def _carries_data(nodes: list[torch.fx.Node]) -> set[torch.fx.Node]:
    """Nodes whose values depend on the image's values (not only on its shape or on parameters)."""
    data: set[torch.fx.Node] = set()
    for node in nodes:
        if node.op == "placeholder":
            data.add(node)
        elif node.op in ("call_function", "call_method", "call_module") and not _is_shape_only(node):
            if any(arg in data for arg in _inputs(node)):
                data.add(node)
    return data


def _data_ancestors(nodes: list[torch.fx.Node], data: set[torch.fx.Node]) -> dict[torch.fx.Node, set]:
    ancestors: dict[torch.fx.Node, set] = {}
    for node in nodes:
        if node in data:
            found: set = set()
            for arg in _inputs(node):
                if arg in data:
                    found.add(arg)
                    found |= ancestors[arg]
            ancestors[node] = found
    return ancestors


def _view_source(node: torch.fx.Node) -> torch.fx.Node:
    """The tensor whose data `node` passes on untouched (through chunks, splits, getitems, views)."""
    while node.args and isinstance(node.args[0], torch.fx.Node):
        is_view = (node.op == "call_method" and node.target in _VIEW_METHODS) or (
            node.op == "call_function" and node.target in _VIEW_FUNCTIONS
        )
        if not is_view:
            break
        node = node.args[0]
    return node


def _tensor_operands(node: torch.fx.Node) -> list[torch.fx.Node]:
    if node.target in _CATS:
        operands = node.args[0] if node.args else node.kwargs.get("tensors", ())
        if not isinstance(operands, list | tuple):  # cat's tensors are a list (fx's immutable_list)
            return []
        return [arg for arg in operands if isinstance(arg, torch.fx.Node)]
    return [arg for arg in node.args if isinstance(arg, torch.fx.Node)]


def scope(node: torch.fx.Node) -> tuple[str, ...]:
    """The module paths around `node`, outermost first (a module call's own path last)."""
    stack = node.meta.get("nn_module_stack") or {}
    paths = [path for path, _ in stack.values()]
    if node.op == "call_module" and (not paths or paths[-1] != node.target):
        paths.append(str(node.target))
    return tuple(paths)


def _skips(nodes: list[torch.fx.Node], data: set, ancestors: dict) -> Iterator[Skip]:
    position = {node: index for index, node in enumerate(nodes)}
    for node in nodes:
        if node not in data or node.op not in ("call_function", "call_method"):
            continue
        operands = [arg for arg in _tensor_operands(node) if arg in data]
        if node.target in _ADDS and len(operands) >= 2:
            yield Skip(node=node.name, kind="add", scope=scope(node))
        elif node.target in _CATS and len(operands) >= 2:
            # The block's input (or an untouched part of it) concatenated with what the block made
            # of it; the skip belongs to the block that made the newest operand.
            sources = [_view_source(arg) for arg in operands]
            made = [b for b in operands if any(s in ancestors[b] for s in sources)]
            if made:
                newest = max(made, key=position.__getitem__)
                yield Skip(node=node.name, kind="concat", scope=scope(newest))


# --- the graph as drawn ------------------------------------------------------------------------

_PLUMBING_METHODS = {
    "view",
    "reshape",
    "permute",
    "transpose",
    "flatten",
    "contiguous",
    "expand",
    "unsqueeze",
    "squeeze",
    "chunk",
    "split",
    "narrow",
    "to",
    "type_as",
    "float",
}
_PLUMBING_FUNCTIONS = {
    operator.getitem,
    _operator.getitem,
    torch.flatten,
    torch.reshape,
    torch.permute,
    torch.transpose,
    torch.squeeze,
    torch.unsqueeze,
    torch.chunk,
    torch.split,
}


def _is_plumbing(node: torch.fx.Node) -> bool:
    if node.op == "call_method":
        return node.target in _PLUMBING_METHODS
    return node.op == "call_function" and node.target in _PLUMBING_FUNCTIONS


def _layer_label(layer: nn.Module, path: str) -> str:
    kind = type(layer).__name__
    details = ""
    if isinstance(layer, nn.modules.conv._ConvNd):
        kernel, stride = _pair(layer.kernel_size), _pair(layer.stride)
        details = f" {kernel[0]}x{kernel[1]}" + (f" /{stride[0]}" if stride[0] > 1 else "")
        details += f" ({layer.groups} groups)" if 1 < layer.groups < layer.in_channels else ""
        details += " depthwise" if layer.groups == layer.in_channels > 1 else ""
    elif isinstance(layer, nn.Linear):
        details = f" {layer.in_features}→{layer.out_features}"
    return f"{path.rpartition('.')[2]}: {kind}{details}"


def _ops(module: torch.fx.GraphModule, nodes: list[torch.fx.Node], data: set) -> Iterator[Op]:
    shown: dict[torch.fx.Node, tuple[str, ...]] = {}  # node -> the drawn ops it stands for
    for node in nodes:
        if node.op == "placeholder":
            shown[node] = ("input",)
            continue
        if node not in data or node.op == "output":
            continue
        reads = tuple(dict.fromkeys(name for arg in _inputs(node) if arg in shown for name in shown[arg]))
        if _is_plumbing(node):
            shown[node] = reads
            continue
        shown[node] = (node.name,)
        if node.op == "call_module":
            label, kind = _layer_label(module.get_submodule(str(node.target)), str(node.target)), "layer"
        elif node.target in _ADDS:
            label, kind = "+", "add"
        elif node.target in _CATS:
            label, kind = "concat", "concat"
        elif node.target in (operator.mul, torch.mul, "mul", "mul_"):
            label, kind = "×", "op"
        else:
            label, kind = str(getattr(node.target, "__name__", node.target)), "op"
        yield Op(name=node.name, label=label, inputs=reads, scope=scope(node), kind=kind)


_WEIGHT_LAYERS = (nn.modules.conv._ConvNd, nn.Linear, nn.MultiheadAttention)


def _longest_weighted_path(module: torch.fx.GraphModule, nodes: list[torch.fx.Node], data: set) -> int:
    """Weight layers on the longest path; a channel gate (squeeze-excitation: a 1x1 map multiplied
    onto a larger one) is a side path, not depth."""
    longest: dict[torch.fx.Node, int] = {}
    for node in nodes:
        grid = _spatial(_shape(node))
        operands = [arg for arg in _inputs(node) if arg in data]
        if grid not in (None, (1, 1)):
            operands = [arg for arg in operands if _spatial(_shape(arg)) != (1, 1)] or operands
        before = max((longest.get(arg, 0) for arg in operands), default=0)
        weighted = node.op == "call_module" and isinstance(module.get_submodule(str(node.target)), _WEIGHT_LAYERS)
        longest[node] = before + int(weighted)
    return max(longest.values(), default=0)


# --- receptive fields ---------------------------------------------------------------------------

_Field = tuple[float, float, float, float] | None  # (rows, cols, jump_rows, jump_cols); None: unknown


def _shape(node: torch.fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _spatial(shape: tuple[int, ...] | None) -> tuple[int, int] | None:
    return (shape[-2], shape[-1]) if shape is not None and len(shape) >= 3 else None


def _pair(value: Any) -> tuple[int, int]:  # an int or a pair: a layer's attribute or a traced call's argument
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[-1]))


def _windowed(field: _Field, kernel: tuple[int, int], stride: tuple[int, int], dilation=(1, 1)) -> _Field:
    if field is None or field[0] == GLOBAL:
        return field
    rows, cols, jump_rows, jump_cols = field
    return (
        rows + dilation[0] * (kernel[0] - 1) * jump_rows,
        cols + dilation[1] * (kernel[1] - 1) * jump_cols,
        jump_rows * stride[0],
        jump_cols * stride[1],
    )


def _merged(node: torch.fx.Node, fields: dict[torch.fx.Node, _Field], data: set) -> _Field:
    """Pointwise ops and joins: the widest field among the operands laid on the output's grid
    (a 1x1 operand broadcast over it is a channel gate, not a window)."""
    operands = [arg for arg in _inputs(node) if arg in data]
    if not operands:
        return None
    out = _spatial(_shape(node))
    on_grid = [arg for arg in operands if out is None or _spatial(_shape(arg)) in (out, None)]
    if out is not None and out != (1, 1):
        on_grid = [arg for arg in on_grid if _spatial(_shape(arg)) == out] or on_grid
    chosen = [fields.get(arg) for arg in (on_grid or operands)]
    known = [field for field in chosen if field is not None]
    if len(known) < len(chosen):
        return None
    if any(field[0] == GLOBAL for field in known):
        return (GLOBAL, GLOBAL, 1.0, 1.0)
    rows, cols, jump_rows, jump_cols = (max(values) for values in zip(*known, strict=True))
    return (rows, cols, jump_rows, jump_cols)


def _node_field(
    node: torch.fx.Node, module: torch.fx.GraphModule, fields: dict[torch.fx.Node, _Field], data: set
) -> _Field:
    operands = [arg for arg in _inputs(node) if arg in data]
    first = fields.get(operands[0]) if operands else None
    before, after = (_shape(operands[0]) if operands else None), _shape(node)
    if node.op == "call_module":
        layer = module.get_submodule(str(node.target))
        if isinstance(layer, nn.MultiheadAttention):
            return (GLOBAL, GLOBAL, 1.0, 1.0)
        if hasattr(layer, "kernel_size") and hasattr(layer, "stride"):  # convolutions, pools (timm's too)
            dilation = _pair(getattr(layer, "dilation", 1))
            return _windowed(first, _pair(layer.kernel_size), _pair(layer.stride or layer.kernel_size), dilation)
    elif node.op == "call_function":
        name = getattr(node.target, "__name__", "")
        if node.target in _GLOBAL_FUNCTIONS:
            return (GLOBAL, GLOBAL, 1.0, 1.0)
        if name in _POOL_FUNCTIONS:
            kernel = node.kwargs.get("kernel_size", node.args[1] if len(node.args) > 1 else None)
            stride = node.kwargs.get("stride", node.args[2] if len(node.args) > 2 else None) or kernel
            return _windowed(first, _pair(kernel), _pair(stride))
        if (getattr(node.target, "__module__", None) or "torch").split(".")[0] not in _TORCH_MODULES:
            return None  # a library function kept whole by the tracer: what it mixes is not visible
    elif node.op == "call_method" and node.target in _GLOBAL_METHODS:
        return (GLOBAL, GLOBAL, 1.0, 1.0)
    # Whatever shrinks a spatial map to one value per channel (global pooling, mean, flatten) sees it all.
    if before is not None and after is not None and _spatial(before) not in (None, (1, 1)):
        if _spatial(after) in (None, (1, 1)) and len(after) < len(before) or _spatial(after) == (1, 1):
            return (GLOBAL, GLOBAL, 1.0, 1.0)
    return _merged(node, fields, data)


def _receptive_fields(
    module: torch.fx.GraphModule, nodes: list[torch.fx.Node], data: set, input_size: int
) -> dict[str, float]:
    fields: dict[torch.fx.Node, _Field] = {}
    for node in nodes:
        if node.op == "placeholder":
            fields[node] = (1.0, 1.0, 1.0, 1.0)
        elif node in data:
            fields[node] = _node_field(node, module, fields, data)
    # A module's output is the last node traced inside it.
    by_path: dict[str, float | None] = {}  # None: its output's field is unknown
    for node in nodes:
        if node not in data:
            continue
        field = fields[node]
        for path in scope(node):
            by_path[path] = None if field is None else max(field[0], field[1])
    return {path: value for path, value in by_path.items() if value is not None}
