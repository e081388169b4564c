"""What core.classify.predict needs of a model, whatever runs it: the `Classifier` protocol.

A catalogue model's handle (core.engines.handle.ModelHandle, whatever engine runs it), its PyTorch model
alone (core.models.loading.LoadedModel), and a person's fine-tuned model (core.finetune.trained.TrainedClassifier)
all answer to it, so classifying never asks which one it has.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch

from core.preprocessing import Transform


class Preprocessing(Protocol):
    """What turning images into a model's batch needs: a classifier, or a backbone without its head."""

    @property
    def preprocess(self) -> Transform:
        """The weights' own evaluation transforms (resize, crop, normalise)."""
        ...

    @property
    def device(self) -> torch.device:
        """Where `forward` computes (a batch may come from the CPU)."""
        ...


@runtime_checkable
class Classifier(Preprocessing, Protocol):
    @property
    def name(self) -> str: ...

    @property
    def categories(self) -> Sequence[str]: ...

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits (N, C) for a preprocessed batch (N, 3, S, S); never trains or changes shared state."""
        ...
