"""How a catalogue model is asked for, and pooled: its name and the engine it must run in, if any.

`ModelKey("resnet50")` is resnet50 in the runtime core.runtime decides for this server (ZOOSCOPE_RUNTIME or
the command line's --runtime; on the CPU, ONNX Runtime where its export is verified, else PyTorch with a
note); `ModelKey("resnet50", "int8")` is its int8 variant and nothing else, so Compare can set the two side
by side. `ModelKey("resnet50", weights="IMAGENET1K_V1")` is resnet50 in another of its published weights
versions (None: torchvision's DEFAULT), pooled, exported and cached apart from the default. The label a person
reads ("resnet50 · int8", "resnet50 · IMAGENET1K_V1") is made from the key, never read back into one.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.models.catalog import get_spec
from core.models.labels import LABEL_SEPARATOR, model_label, model_slug
from core.runtime import ENGINES

__all__ = ["LABEL_SEPARATOR", "ModelKey", "model_label", "model_slug"]


@dataclass(frozen=True)
class ModelKey:
    """A catalogue model and the engine asked for: None for the server's runtime, else exactly that engine
    (core.runtime.ENGINES), which raises where it cannot run instead of falling back."""

    name: str
    engine: str | None = None
    weights: str | None = None  # a published weights version ("IMAGENET1K_V1"); None is the default

    def __post_init__(self) -> None:
        if self.engine is not None and self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)} or None, not {self.engine!r}")
        if self.weights is not None:
            # The default named outright is the default: one pool entry, one label. Unknown: UnknownWeights.
            object.__setattr__(self, "weights", get_spec(self.name, self.weights).weights_choice)

    @property
    def label(self) -> str:
        """What a person reads: "resnet50", "resnet50 · int8", "resnet50 · IMAGENET1K_V1"."""
        return model_label(self.name, self.engine, self.weights)

    @property
    def slug(self) -> str:
        """The key in a file name: "resnet50", "resnet50-int8", "resnet50-IMAGENET1K_V1"."""
        return model_slug(self.name, self.engine, self.weights)

    def __str__(self) -> str:  # a widget's format_func, a log line, a note
        return self.label
