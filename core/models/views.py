"""Private views of shared models: the same weight tensors, but module objects of one's own.

Cached models are shared by every browser session, so anything that must change a module (hooks
for Grad-CAM, a swapped head or block for fine-tuning) works on a view instead: the architecture
built again on the meta device with the shared tensors assigned, not copied.
"""

from __future__ import annotations

import torch.nn as nn

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
