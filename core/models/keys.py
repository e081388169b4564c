"""How a catalogue model is asked for, and pooled: its name and the engine it must run in, if any.

`ModelKey("resnet50")` is resnet50 in the runtime core.runtime decides for this server (ZOOSCOPE_RUNTIME or
the command line's --runtime; on the CPU, ONNX Runtime where its export is verified, else PyTorch with a
note); `ModelKey("resnet50", "int8")` is its int8 variant and nothing else, so Compare can set the two side
by side. The label a person reads ("resnet50 · int8") is made from the key, never read back into one.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.runtime import ENGINES

LABEL_SEPARATOR = " · "


def model_label(name: str, engine: str | None) -> str:
    """How a model in an engine is listed: "resnet50 · int8" beside "resnet50". PyTorch and ONNX Runtime fp32
    give the same answers (an fp32 export is verified to), so both are listed by the model's name alone."""
    return f"{name}{LABEL_SEPARATOR}int8" if engine == "int8" else name


@dataclass(frozen=True)
class ModelKey:
    """A catalogue model and the engine asked for: None for the server's runtime, else exactly that engine
    (core.runtime.ENGINES), which raises where it cannot run instead of falling back."""

    name: str
    engine: str | None = None

    def __post_init__(self) -> None:
        if self.engine is not None and self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)} or None, not {self.engine!r}")

    @property
    def label(self) -> str:
        """What a person reads: "resnet50", "resnet50 · int8"."""
        return model_label(self.name, self.engine)

    @property
    def slug(self) -> str:
        """The key in a file name: "resnet50", "resnet50-int8"."""
        return f"{self.name}-int8" if self.engine == "int8" else self.name

    def __str__(self) -> str:  # a widget's format_func, a log line, a note
        return self.label
