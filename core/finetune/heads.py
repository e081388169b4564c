"""New classification heads for a backbone's features, initialised and regularised from a private generator."""

from __future__ import annotations

import math
from copy import deepcopy

import torch
import torch.nn as nn

from core.errors import ZooScopeError

HEAD_TYPES = ("linear", "mlp")


class SeededDropout(nn.Dropout):
    """nn.Dropout drawing its masks from a private generator (None: the global one, as nn.Dropout)."""

    def __init__(self, p: float, generator: torch.Generator | None = None):
        super().__init__(p)
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or self.generator is None:
            return super().forward(x)
        keep = torch.empty(x.shape, device="cpu").bernoulli_(1.0 - self.p, generator=self.generator).to(x.device)
        return x * keep / (1.0 - self.p)


def _init_linear(layer: nn.Linear, generator: torch.Generator | None) -> nn.Linear:
    # nn.Linear's own initialisation, drawn from `generator`.
    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
    bound = 1 / math.sqrt(layer.in_features)
    nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
    return layer


def build_head(
    kind: str,
    in_features: int,
    num_classes: int,
    *,
    hidden: int = 256,
    dropout: float = 0.2,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """A new head: "linear" is Linear(D, C); "mlp" is Linear(D, hidden)-ReLU-Dropout-Linear(hidden, C)."""
    if kind == "linear":
        return _init_linear(nn.Linear(in_features, num_classes), generator)
    if kind == "mlp":
        return nn.Sequential(
            _init_linear(nn.Linear(in_features, hidden), generator),
            nn.ReLU(),
            SeededDropout(dropout, generator),
            _init_linear(nn.Linear(hidden, num_classes), generator),
        )
    raise ZooScopeError(f"Unknown head type '{kind}'; choose one of {', '.join(HEAD_TYPES)}.")


def first_linear(head: nn.Module) -> nn.Linear:
    """A head's first layer: the head itself ("linear"), or the Linear an "mlp" starts with. Its `in_features`
    is the feature width; an mlp's `out_features` is its hidden width."""
    first = head[0] if isinstance(head, nn.Sequential) else head
    if not isinstance(first, nn.Linear):
        raise TypeError(f"{type(head).__name__} is not a head build_head makes")
    return first


class InputScale:
    """Per-feature standardisation learnt from the training features, folded into the head once trained.

    A middle stage's pooled channels differ in scale by orders of magnitude (unlike the penultimate layer,
    which ImageNet's own classifier was trained to read), and a head trained on them raw for fast mode's
    few epochs underfits. Training on standardised features, then folding the scale into the head's first
    Linear (W' = W / std, b' = b - W' mean), keeps the head a plain Linear on the raw features: the same
    bundle, ONNX export and Classify path as any other head.
    """

    def __init__(self, features: torch.Tensor, eps: float = 1e-6):
        self.mean = features.mean(dim=0)
        self.std = features.std(dim=0, unbiased=False).clamp_min(eps)

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.std

    def folded(self, head: nn.Module) -> nn.Module:
        """A copy of `head` (trained on scaled features) that reads raw features and answers the same."""
        copy = deepcopy(head)
        layer = first_linear(copy)
        with torch.no_grad():
            layer.weight.div_(self.std.to(layer.weight))
            layer.bias.sub_(layer.weight @ self.mean.to(layer.weight))
        return copy
