"""How far apart two normalised model inputs are, in the 0..255 levels of the pixels they came from."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def levels_apart(ours: torch.Tensor, reference: torch.Tensor, std: Sequence[float]) -> torch.Tensor:
    """|ours - reference| per value, undone from (x / 255 - mean) / std back to pixel levels."""
    scale = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1) * 255.0
    return (ours - reference).abs() * scale
