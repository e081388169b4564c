"""Unstructured pruning, shown for what it is: single weights set to zero, the network's shape unchanged.

The smallest weights by magnitude, ranked across every convolution and linear layer together
(torch.nn.utils.prune.global_unstructured with L1Unstructured), become exact zeros. The tensors keep
their dense shapes, so every runtime still stores and multiplies them: what zeros buy is a file that
compresses well (a smaller download), not a faster or smaller model in memory. Channel pruning
(core.shrink.prune) is what makes a network faster; this is here so the two can be compared honestly.

The given model is never touched: zeroing works on a deep copy.
"""

from __future__ import annotations

import copy
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

DEFLATE_LEVEL = 6  # zlib's and zip's default: what a person's zip tool or a web server's gzip would do
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Sparse:
    module: nn.Module  # eval mode, frozen; a new module, never the one given
    amount: float  # the share of conv/linear weights asked to be zero
    zero_share: float  # the share of conv/linear weights that are exactly zero (those already zero count too)


def _weighted_layers(module: nn.Module) -> list[nn.Conv2d | nn.Linear]:
    return [layer for layer in module.modules() if isinstance(layer, nn.Conv2d | nn.Linear)]


def zero_share(module: nn.Module) -> float:
    """The share of the weights of `module`'s convolutions and linear layers that are exactly zero."""
    weights = [layer.weight for layer in _weighted_layers(module)]
    total = sum(weight.numel() for weight in weights)
    zeros = sum(int((weight == 0).sum()) for weight in weights)
    return zeros / total if total else 0.0


def zero_smallest(module: nn.Module, amount: float) -> Sparse:
    """A copy of `module` with the `amount` smallest of all its conv/linear weights (by magnitude, ranked
    globally) set to zero, as plain weights: no pruning masks or hooks are left behind.

    Raises ValueError for an amount outside (0, 1), or a module with no convolution or linear layer.
    """
    import torch.nn.utils.prune as prune

    if not 0 < amount < 1:
        raise ValueError(f"the share of weights to zero must be between 0 and 1, not {amount}")
    model = copy.deepcopy(module)
    layers = _weighted_layers(model)
    if not layers:
        raise ValueError("this module has no convolution or linear layer to zero weights in")
    for layer in layers:  # the ranking flattens each weight with view(-1), which needs a plain layout
        layer.weight = nn.Parameter(layer.weight.detach().contiguous(), requires_grad=layer.weight.requires_grad)
    targets = [(layer, "weight") for layer in layers]
    with torch.no_grad():
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=amount)
        for layer, name in targets:
            prune.remove(layer, name)  # weight_orig * weight_mask becomes the plain `weight` again
    model.eval().requires_grad_(False)
    return Sparse(module=model, amount=amount, zero_share=zero_share(model))


def compressed_mb(path_or_bytes: str | Path | bytes) -> float:
    """The size in MB (2**20 bytes) of a file (or bytes) after deflate at level 6, as zip or gzip store it.

    Why zeros buy only this: a dense CPU kernel (oneDNN's, XNNPACK's, ONNX Runtime's MLAS) multiplies a
    tile of the weight matrix with a tile of the activations in fixed vector instructions, whatever the
    values; a zero costs the same multiply-add as any other number. Skipping zeros pays only with a sparse
    format and kernels made for it, and then only at far higher sparsity than half, or in a pattern the
    hardware knows (2 of every 4, on recent NVIDIA GPUs). Stored, though, a run of zero bytes deflates
    to almost nothing, so the download shrinks while the model in memory and its speed do not.
    """
    compressor = zlib.compressobj(DEFLATE_LEVEL)
    size = 0
    if isinstance(path_or_bytes, bytes):
        size += len(compressor.compress(path_or_bytes))
    else:
        with open(path_or_bytes, "rb") as file:
            while chunk := file.read(_CHUNK):
                size += len(compressor.compress(chunk))
    size += len(compressor.flush())
    return size / 2**20
