"""The frozen prefix and the trainable tail of a backbone as two separate forwards.

With a `Cut` (core.finetune.depth), `SplitBackbone` runs the same network three ways, all over
private views of the shared model (the shared tensors are only ever read):

- `prefix(batch)`: the frozen part, without autograd, up to the cut: its output is the input of
  the first module that trains, and that is what may be cached once per image;
- `tail(cut_input)`: the trainable part from that input on, with autograd through the person's
  own copies. The frozen modules before the cut are replaced by stand-ins that return zeros of
  the right shape (found on the meta device), so the model's own forward code runs unchanged
  around them while costing nothing, and the first trainable module is fed the cut input instead;
- `features(batch)` (`full`): everything, images to features, with the copies in place.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.utils import _pytree as pytree

from core import runtime
from core.features.backbone import BackboneView, backbone_view
from core.finetune.depth import Cut, shapes_model
from core.models.family_paths import get_layer, set_layer
from core.models.loading import LoadedModel
from core.models.views import private_view


class _ReachedCut(Exception):  # noqa: N818 - control flow, not an error
    def __init__(self, inputs: tuple):
        super().__init__()
        self.inputs = inputs


class _StopAtCut(nn.Module):
    """Where the first trainable module would run: hands its input back and ends the forward."""

    def forward(self, *args, **kwargs):
        if len(args) != 1 or kwargs or not isinstance(args[0], torch.Tensor):
            raise TypeError("the module after the cut takes one tensor")
        raise _ReachedCut(args)


class _ZerosLike(nn.Module):
    """Stands in for a frozen module before the cut: zeros shaped like its output, nothing computed.

    Nothing reads their values (the module after the cut is fed the cut input instead), so the
    zeros take no memory: one zero seen through the output's shape (stride 0).
    """

    def __init__(self, meta_module: nn.Module):
        super().__init__()
        self._meta = (meta_module,)  # a tuple: not a submodule, never in a state dict
        self._shapes: dict[tuple, object] = {}

    def forward(self, *args, **kwargs):
        leaves = [leaf for leaf in pytree.tree_leaves((args, kwargs)) if isinstance(leaf, torch.Tensor)]
        key = tuple((tuple(t.shape), t.dtype) for t in leaves)
        shapes = self._shapes.get(key)
        if shapes is None:
            on_meta = pytree.tree_map(lambda x: x.to("meta") if isinstance(x, torch.Tensor) else x, (args, kwargs))
            with runtime.TORCH_GLOBAL_STATE, torch.no_grad():  # a meta forward of a shared model
                shapes = self._shapes[key] = self._meta[0](*on_meta[0], **on_meta[1])
        device = leaves[0].device if leaves else torch.device("cpu")
        return pytree.tree_map(lambda t: torch.zeros((), dtype=t.dtype, device=device).expand(t.shape), shapes)


class _FedFromCut(nn.Module):
    """The first trainable module, given the cut input (set just before each call) instead of its own."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module
        self.cut_input: torch.Tensor | None = None

    def forward(self, *args, **kwargs):
        return self.module(self.cut_input)


@dataclass(eq=False)
class SplitBackbone:
    """A backbone cut in two: a frozen prefix and a tail of the person's own trainable copies."""

    cut: Cut
    full: BackboneView  # images -> features, with the copies in place
    tuned: dict[str, nn.Module]  # path -> the person's copy (every tail module that holds tensors)
    _prefix: nn.Module | None = None  # the frozen view, stopping at the cut
    _tail: nn.Module | None = None
    _entry: _FedFromCut | None = None

    @property
    def feature_dim(self) -> int:
        return self.full.feature_dim

    def prefix(self, batch: torch.Tensor) -> torch.Tensor:
        """The frozen part's output for a preprocessed batch, without autograd: the tail's input."""
        with torch.no_grad():
            if self._prefix is None:  # nothing of the backbone trains: the whole of it is the prefix
                return self.full.module(batch).float()
            try:
                self._prefix(batch)
            except _ReachedCut as reached:
                return reached.inputs[0]
        raise RuntimeError(f"{self.full.name}'s forward never reached '{self.cut.start}'")

    def tail(self, cut_input: torch.Tensor, image_size: int) -> torch.Tensor:
        """Features from the prefix's output for images of `image_size` pixels, with autograd through
        the copies (and nothing before them)."""
        if self._tail is None or self._entry is None:
            return cut_input
        # The model's own forward runs from its input as usual: a free placeholder of the images' shape
        # (shape checks pass; the stand-ins ignore its values).
        placeholder = torch.zeros((), device=cut_input.device).expand(cut_input.shape[0], 3, image_size, image_size)
        self._entry.cut_input = cut_input
        try:
            return self._tail(placeholder)
        finally:
            self._entry.cut_input = None

    def parameters(self) -> Iterator[nn.Parameter]:
        for module in self.tuned.values():
            yield from module.parameters()

    def train(self, *, adapt_batchnorm: bool) -> None:
        """Training steps: batch-norm layers in the copies update their statistics only if asked to."""
        for module in self.tuned.values():
            module.eval()
            if adapt_batchnorm:
                for layer in module.modules():
                    if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                        layer.train()

    def eval(self) -> None:
        for module in self.tuned.values():
            module.eval()

    def state(self) -> dict[str, dict[str, torch.Tensor]]:
        return {path: {k: v.detach().clone() for k, v in m.state_dict().items()} for path, m in self.tuned.items()}

    def load_state(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        for path, module in self.tuned.items():
            module.load_state_dict(state[path])


def private_copies(loaded: LoadedModel, paths: list[str] | tuple[str, ...]) -> dict[str, nn.Module]:
    """Deep copies of the shared modules at `paths`: the person's own tensors, frozen until asked."""
    source = private_view(loaded)  # its Parameters wrap the shared storage; deepcopy copies that storage
    return {path: copy.deepcopy(get_layer(source, path, loaded.spec.name)) for path in paths}


def split_backbone(
    loaded: LoadedModel,
    cut: Cut,
    *,
    prepare: Callable[[nn.Module], nn.Module] = lambda module: module,
    copies: dict[str, nn.Module] | None = None,
) -> SplitBackbone:
    """`loaded` cut at `cut`: deep copies of every tail module that holds tensors (the person's own,
    requires_grad), placed in a full view and a tail view, beside a frozen prefix view.

    `prepare` is applied to each copy (e.g. channels-last). `copies` (path -> module, for every path in
    `cut.tuned`) are used instead of copies of the shared modules: the from-scratch baseline's random ones.
    """
    if cut.start is None:
        return SplitBackbone(cut=cut, full=backbone_view(loaded), tuned={})
    own = copies if copies is not None else private_copies(loaded, cut.tuned)
    tuned = {path: prepare(own[path]).requires_grad_(True) for path in cut.tuned}
    full = backbone_view(loaded, tuned=tuned)

    prefix = backbone_view(loaded).module
    set_layer(prefix, cut.start, _StopAtCut(), loaded.spec.name)

    tail = backbone_view(loaded, tuned=tuned).module
    meta = shapes_model(loaded.spec.name)
    for path in cut.prefix:
        set_layer(tail, path, _ZerosLike(get_layer(meta, path, loaded.spec.name)), loaded.spec.name)
    entry = _FedFromCut(get_layer(tail, cut.start, loaded.spec.name))
    set_layer(tail, cut.start, entry, loaded.spec.name)

    return SplitBackbone(cut=cut, full=full, tuned=tuned, _prefix=prefix, _tail=tail, _entry=entry)
