"""One pass of a model's torch.fx graph on meta tensors (no weights, no arithmetic), with torch's
FLOP counter: for every module, the graph nodes it ran (from their module stack), the FLOPs counted
before and after, and its input's and output's shapes; the skips and receptive fields come from
the same pass (core.inside.dataflow). Inside's anatomy is built from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from core.inside import dataflow


class _GlobalOnly:
    """Stands in for FlopCounterMode's module tracker: every count goes to the "Global" total."""

    parents = ("Global",)

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return None


class FlopCounter(FlopCounterMode):
    """torch's FlopCounterMode (its counting is a dispatch mode: this thread's ops only) without its
    module tracker, which hooks every module in the process while it counts: other sessions'
    forwards (and fine-tuning backwards) would run through those hooks. Only the total is read."""

    def __init__(self):
        super().__init__(display=False)
        self.mod_tracker = _GlobalOnly()  # type: ignore[assignment]  # duck-typed: only `parents` and the context are used


@dataclass
class ModuleCall:
    """Where a module ran in the traced graph: its first and last node, FLOPs counted before and
    after, its input's and output's shapes (no batch)."""

    first: int
    last: int
    flops_before: int = 0
    flops_after: int = 0
    input_shape: tuple[int, ...] = ()
    output_shape: tuple[int, ...] = ()


def _node_shape(node: torch.fx.Node) -> tuple[int, ...]:
    meta = node.meta.get("tensor_meta")  # a TensorMetadata (a named tuple), or a tuple of them
    while isinstance(meta, (tuple, list)) and meta and not hasattr(meta, "shape"):
        meta = meta[0]
    shape = getattr(meta, "shape", None)
    return tuple(shape[1:]) if shape is not None else ()


def trace(model: nn.Module, input_size: int) -> tuple[dict[str, ModuleCall], int, dataflow.Dataflow]:
    """One pass on meta tensors: the fx graph run with torch's FLOP counter, and for every module
    the nodes it ran (nn_module_stack), so stages, blocks, FLOPs and shapes come from the same pass
    as the skips and receptive fields."""
    calls: dict[str, ModuleCall] = {}
    counter = FlopCounter()
    position, flops_so_far = 0, 0

    def after(node: torch.fx.Node) -> None:
        nonlocal position, flops_so_far
        position += 1
        before, flops_so_far = flops_so_far, counter.get_total_flops()
        if node.op in ("placeholder", "output"):
            return
        shape = _node_shape(node)
        for path in ("", *dataflow.scope(node)):
            call = calls.get(path)
            if call is None:
                inputs = [_node_shape(arg) for arg in node.all_input_nodes]
                call = calls[path] = ModuleCall(position, position, before, input_shape=next(filter(None, inputs), ()))
            call.last, call.flops_after = position, flops_so_far
            if shape:
                call.output_shape = shape

    with counter:
        flow = dataflow.analyse(model, input_size, after)
    return calls, counter.get_total_flops(), flow
