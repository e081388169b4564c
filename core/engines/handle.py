"""One model handle: what every page, the command line, batch and the benchmarks get for a catalogue model.

A `ModelHandle` has two faces:

- `torch`, the PyTorch model (core.models.loading.LoadedModel: spec, module, preprocess, device), shared and
  read-only: what needs PyTorch itself takes it explicitly (Grad-CAM, stage maps, fine-tuning's views, the
  reference an export is checked against);
- `inference`, the engine that runs `forward`: PyTorch itself (`PyTorchEngine`) or ONNX Runtime, fp32 or int8
  (core.engines.onnx_engine.OnnxEngine), with its runtime, the memory it holds, the file it runs from, and
  what was measured about it (`report`).

The handle answers to core.classify.classifier.Classifier, so classifying and comparing never ask which
engine it has. core.engines.choice.load_handle makes handles; core.engines.pool keeps them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import Tensor
from torch import device as Device
from torch.nn import Module

from core import runtime
from core.models.catalog import ModelSpec
from core.models.keys import model_label
from core.models.loading import LoadedModel


class InferenceEngine(Protocol):
    """What runs a handle's forward pass, and what it costs."""

    @property
    def runtime(self) -> str:
        """One of core.runtime.ENGINES: "torch", "onnx" (ONNX Runtime fp32) or "int8"."""
        ...

    @property
    def device(self) -> Device: ...

    @property
    def precision(self) -> str:
        """How it computes: "fp32", "bf16" (PyTorch autocast) or "int8"."""
        ...

    @property
    def channels_last(self) -> bool: ...

    @property
    def memory_mb(self) -> float:
        """MiB of weights it holds."""
        ...

    @property
    def file_size_mb(self) -> float:
        """MiB of the file it runs from."""
        ...

    @property
    def report(self) -> Mapping[str, Any]:
        """What was measured about it (core.engines.onnx_engine); empty for PyTorch itself."""
        ...

    def forward(self, batch: Tensor) -> Tensor: ...


@dataclass(frozen=True, eq=False)
class PyTorchEngine:
    """PyTorch itself runs the forward pass: the torch face's own module, its precision and layout."""

    model: LoadedModel

    @property
    def runtime(self) -> str:
        return "torch"

    @property
    def device(self) -> Device:
        return self.model.device

    @property
    def precision(self) -> str:
        return self.model.precision

    @property
    def channels_last(self) -> bool:
        return self.model.channels_last

    @property
    def memory_mb(self) -> float:
        return self.model.memory_mb

    @property
    def file_size_mb(self) -> float:
        return self.model.file_size_mb

    @property
    def report(self) -> Mapping[str, Any]:
        return {}

    def forward(self, batch: Tensor) -> Tensor:
        return self.model.forward(batch)


@dataclass(frozen=True, eq=False)
class ModelHandle:
    """A catalogue model, shared and read-only: its torch face, its inference face, and a note for a person
    (why it runs in another engine than was asked for, or where its files live)."""

    torch: LoadedModel
    inference: InferenceEngine = field(repr=False)
    note: str = ""

    @classmethod
    def in_pytorch(cls, loaded: LoadedModel, note: str = "") -> ModelHandle:
        """`loaded` run by PyTorch itself."""
        return cls(loaded, PyTorchEngine(loaded), note)

    # --- core.classify.classifier.Classifier ---

    @property
    def name(self) -> str:
        """The model's name, with its engine where that changes its answers: "resnet50", "resnet50 · int8",
        and its weights version where that is not the default: "resnet50 · IMAGENET1K_V1"."""
        return model_label(self.spec.name, self.runtime, self.spec.weights_choice)

    @property
    def categories(self) -> list[str]:
        return self.torch.categories

    @property
    def preprocess(self) -> Module:
        """The weights' own evaluation transforms, whatever engine runs the model."""
        return self.torch.preprocess

    @property
    def device(self) -> Device:
        """Where `forward` computes."""
        return self.inference.device

    def forward(self, batch: Tensor) -> Tensor:
        """Logits (N, C) for a preprocessed batch, computed by the inference engine."""
        return self.inference.forward(batch)

    # --- what the pages and Compare show ---

    @property
    def spec(self) -> ModelSpec:
        """The catalogue entry: name, family, accuracy, params, GFLOPS, input size (the weights' meta)."""
        return self.torch.spec

    @property
    def runtime(self) -> str:
        return self.inference.runtime

    @property
    def precision(self) -> str:
        return self.inference.precision

    @property
    def channels_last(self) -> bool:
        return self.inference.channels_last

    @property
    def memory_mb(self) -> float:
        """MiB the inference engine holds (an ONNX Runtime session's own copy; the mmap'd PyTorch module
        beside it costs memory only once read)."""
        return self.inference.memory_mb

    @property
    def file_size_mb(self) -> float:
        return self.inference.file_size_mb

    @property
    def report(self) -> Mapping[str, Any]:
        return self.inference.report

    @property
    def agreement(self) -> float | None:
        """Share of the check images with PyTorch fp32's top-1: None in PyTorch itself, 1.0 for a verified
        fp32 export, as measured for int8."""
        if self.runtime == "torch":
            return None
        return float(self.report.get("same_top1", 0)) / max(int(self.report.get("images", 0)), 1)

    def int8_verdict(self) -> tuple[bool, str]:
        """(whether this int8 variant is the fast choice, why) from its measurements; other engines: (False, "")."""
        if self.runtime != "int8":
            return False, ""
        return runtime.int8_verdict(self.agreement or 0.0, self.report["int8_ms"], self.report["fp32_ms"])
