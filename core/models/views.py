"""Private views of shared models: the same weight tensors, but module objects of one's own.

Cached models are shared by every browser session, so anything that must change a module (hooks
for Grad-CAM, a swapped head or block for fine-tuning) works on a view instead: the architecture
built again on the meta device with the shared tensors assigned, not copied.
"""

from __future__ import annotations

import torch.nn as nn

from core.errors import ZooScopeError
from core.models.building import build_on_meta
from core.models.loading import LoadedModel


def private_view(loaded: LoadedModel) -> nn.Module:
    """The shared model's architecture with its very tensors assigned (no copy), eval, frozen.

    New Parameter objects wrap the shared storage, so nothing done to the view (hooks,
    requires_grad, swapped submodules) reaches the shared module.
    """
    view = build_on_meta(loaded.spec)
    view.load_state_dict(loaded.module.state_dict(), strict=True, assign=True)
    # Non-persistent buffers are not in a state dict: take the shared module's tensors too.
    shared_buffers = dict(loaded.module.named_buffers())
    for name, buffer in list(view.named_buffers()):
        if buffer.is_meta:
            owner, _, leaf = name.rpartition(".")
            view.get_submodule(owner)._buffers[leaf] = shared_buffers[name]
    return view.eval().requires_grad_(False)


def resolve_layer(model: nn.Module, path: str, model_name: str = "the model") -> tuple[nn.Module, str]:
    """(parent module, child key) of a dotted path; integer parts index children by position,
    negative ones from the end (e.g. "classifier.-1", "encoder.layers.-1.ln_1")."""
    parent, key, module = None, "", model
    for part in path.split("."):
        children = list(module._modules)
        try:
            key = children[int(part)] if part.lstrip("-").isdigit() else part
        except IndexError:
            key = None
        if key not in module._modules or module._modules[key] is None:
            raise ZooScopeError(f"{model_name} has no layer '{path}'.")
        parent, module = module, module._modules[key]
    if parent is None:
        raise ZooScopeError(f"{model_name} has no layer '{path}'.")
    return parent, key


def get_layer(model: nn.Module, path: str, model_name: str = "the model") -> nn.Module:
    parent, key = resolve_layer(model, path, model_name)
    return parent._modules[key]


def set_layer(model: nn.Module, path: str, layer: nn.Module, model_name: str = "the model") -> None:
    parent, key = resolve_layer(model, path, model_name)
    parent._modules[key] = layer
