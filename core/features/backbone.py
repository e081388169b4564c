"""A person's own feature extractor over a shared, read-only backbone.

The cached ImageNet model is shared by every browser session, and other threads run forwards on
it while a person trains. So training never touches `LoadedModel.module`: it builds a private
*view* of it (core.models.views: the same architecture, the shared tensors assigned, nothing copied),
replaces the classifier in the view with `nn.Identity()` so the view returns features, and, where
modules are to train, puts deep copies of them (the person's own tensors) in their places
(core.finetune.tail makes them). Where the head and the last block live comes from the family
table (core.models.families).

Fast mode's features come from `frozen_features`: where the backbone runs in ONNX Runtime, its
export without the head (verified within 1e-4 of PyTorch's features), else the view itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from core.engines.onnx_engine import onnx_features
from core.errors import ZooScopeError
from core.models.catalog import ModelSpec
from core.models.family_paths import get_layer, set_layer
from core.models.loading import LoadedModel
from core.models.views import private_view
from core.progress import Progress

_log = logging.getLogger(__name__)


def head_path(spec: ModelSpec) -> str:
    """Where `spec`'s final Linear classifier lives, or ZooScopeError if it has no such head."""
    path = spec.traits.head
    if path is None:
        raise ZooScopeError(
            f"{spec.name} can't be fine-tuned here: {spec.family} models have no linear classifier to replace."
        )
    return path


def block_path(spec: ModelSpec) -> str:
    """Where `spec`'s last block lives (where "last block" training starts), or ZooScopeError."""
    head_path(spec)
    path = spec.traits.last_block
    if path is None:
        raise ZooScopeError(
            f"{spec.name} can't be fine-tuned here: its last block is unknown; use the fast mode instead."
        )
    return path


def strip_head(model: nn.Module, spec: ModelSpec) -> int:
    """Replace `model`'s final Linear with nn.Identity() in place; returns its in_features (D)."""
    path = head_path(spec)
    head = get_layer(model, path, spec.name)
    if not isinstance(head, nn.Linear):
        raise ZooScopeError(f"{spec.name} can't be fine-tuned here: '{path}' is not a linear classifier.")
    set_layer(model, path, nn.Identity(), spec.name)
    return head.in_features


@dataclass(eq=False)
class BackboneView:
    """A person's own feature extractor over the shared tensors.

    `module` maps a preprocessed batch (N, 3, S, S) to features (N, feature_dim). `tuned` holds the
    person's trained copies (path -> module, already placed in `module`), if any.
    """

    name: str
    module: nn.Module
    feature_dim: int
    tuned: dict[str, nn.Module] = field(default_factory=dict)


def backbone_view(loaded: LoadedModel, *, tuned: Mapping[str, nn.Module] | None = None) -> BackboneView:
    """A private feature extractor for `loaded`, with the person's own copies `tuned` (path -> module,
    trained in an earlier run or read from a bundle) in place of the shared modules at those paths."""
    spec = loaded.spec
    view = private_view(loaded)
    feature_dim = strip_head(view, spec)
    for path, module in (tuned or {}).items():
        set_layer(view, path, module, spec.name)
    view.eval()
    return BackboneView(name=spec.name, module=view, feature_dim=feature_dim, tuned=dict(tuned or {}))


def frozen_features(
    loaded: LoadedModel, view: BackboneView, *, runtime: str = "torch", progress: Progress | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """What computes features for a frozen backbone (fast mode): where the model runs in ONNX Runtime
    (`runtime`, its handle's: "onnx" or "int8"), the backbone exported without its head, once its features
    are within 1e-4 of PyTorch's on the check photos; else, and for a view with trained copies, `view.module`."""
    if runtime == "torch" or view.tuned:
        return view.module
    try:
        forward, _ = onnx_features(loaded, view.module, progress=progress)
    except Exception as error:  # noqa: BLE001 - PyTorch computes the same features, only slower
        _log.warning("%s's features stay in PyTorch: %s", loaded.spec.name, error)
        return view.module
    return forward
