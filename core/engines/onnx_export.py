"""A PyTorch module as an ONNX file with a dynamic batch axis, and the check of its outputs against PyTorch.

The exporter is torch.onnx's default since torch 2.9, the dynamo one (`torch.export`, then
onnxscript), with the weights in an external data file. Measured here (2-core AVX2 CPU, torch
2.14.1, onnxruntime 1.31.1, batch 1, one thread) against the older TorchScript exporter
(`dynamo=False`):

- torch.export keeps every size but the batch static, so a TF-"same"-padded network (the bundled
  EfficientNet-Lite) gets constant pads that ONNX Runtime folds into its convolutions: lite0 runs
  6.5 ms against 8.9 ms from the TorchScript graph, which computes its pads at run time; resnet50
  and mobilenet_v3_large run the same from either;
- vit_b_16 exports (the TorchScript exporter stops at PyTorch's fused attention kernel);
- writing the weights straight into the external data file keeps the export's memory low: vgg16
  peaks at 1.3 GB resident (0.5 GB of it the mmap'd weights) against 2.8 GB from the TorchScript
  exporter, which serialises one protobuf in memory;
- both give the same bytes on every run (checked by tests/unit/test_onnx_engine.py).

The price is time, paid once per model and weights (the files are cached, see core.engines.onnx_cache):
5-13 s per model here against under a second, and two pure-Python packages (onnxscript, onnx-ir).
"""

from __future__ import annotations

import importlib.metadata
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
from PIL import Image

from core import runtime
from core.preprocessing import Transform, model_batch

OPSET = 18
FORMAT = 1  # ZooScope's own export recipe: bump when the graph it writes changes
INPUT = "image"
PROBABILITY_TOLERANCE = 1e-4  # an export must give the same top-1 and probabilities this close to PyTorch's
FEATURE_TOLERANCE = 1e-4  # a feature extractor's outputs, element by element
CHECK_BATCH = 16


class ExportFailed(Exception):
    """The exporter could not convert the module, or the export does not compute what PyTorch does.

    Deterministic for given weights and exporter, so core.engines.onnx_cache remembers it."""


def exporter_version() -> str:
    """Everything the exported bytes depend on besides the weights (part of the cache key)."""
    return (
        f"zooscope-export-{FORMAT} torch-{torch.__version__} "
        f"onnxscript-{importlib.metadata.version('onnxscript')} opset-{OPSET}"
    )


def export_module(module: nn.Module, input_size: int, path: Path, *, output: str = "logits") -> Path:
    """Write `module` (eval, frozen) as ONNX to `path` (+ `path`.data, the weights): input "image"
    (N, 3, S, S), one output named `output`; N is dynamic. Raises ExportFailed with the exporter's reason."""
    example = torch.zeros(2, 3, input_size, input_size)  # 2, not 1: torch.export specialises a batch of 1
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        # One export at a time, and nothing else that touches torch's process-wide tracing state beside it.
        with runtime.TORCH_GLOBAL_STATE, warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                opset_version=OPSET,
                input_names=[INPUT],
                output_names=[output],
                dynamic_shapes=({0: batch},),
                optimize=True,
                verbose=False,
            )
            if program is None:  # only the legacy exporter returns nothing; dynamo=True returns a program
                raise ExportFailed("torch.onnx returned no program")
            program.save(str(path), external_data=True)
    except Exception as error:  # the exporter fails in many ways (unsupported op, tracing error)
        raise ExportFailed(f"torch.onnx could not export it ({type(error).__name__}: {_first_line(error)})") from error
    return path


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else "no message"


# --- the check against PyTorch --------------------------------------------------------------------


@dataclass(frozen=True)
class Agreement:
    """How an export's outputs compare with PyTorch's on the check images."""

    images: int
    same_top1: int  # images whose top-1 class is the same (classifiers) or, for features, all of them
    max_difference: float  # largest |difference| of a probability (classifiers) or a feature value
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.same_top1 == self.images and self.max_difference <= self.tolerance

    @property
    def share(self) -> float:
        return self.same_top1 / self.images if self.images else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}

    def reason(self, what: str = "probabilities") -> str:
        return (
            f"its answers differ from PyTorch's on the check photos: same top-1 on {self.same_top1} of "
            f"{self.images}, {what} up to {self.max_difference:.1e} apart (allowed {self.tolerance:.0e})"
        )


def check_batches(images: Sequence[Image.Image], preprocess: Transform) -> list[torch.Tensor]:
    """The check images as preprocessed batches: the first image alone (batch 1 is what Classify runs),
    then the rest in batches of CHECK_BATCH, so the dynamic batch axis is exercised too."""
    if not images:
        raise ValueError("the check needs at least one image")
    groups = [images[:1]] + [images[start : start + CHECK_BATCH] for start in range(1, len(images), CHECK_BATCH)]
    return [model_batch(group, preprocess) for group in groups]


Forward = Callable[[torch.Tensor], torch.Tensor]


def compare_classifiers(reference: Forward, candidate: Forward, batches: Sequence[torch.Tensor]) -> Agreement:
    """Top-1 and softmax probabilities of `candidate` against `reference` (PyTorch), batch by batch."""
    images = same = 0
    worst = 0.0
    for batch in batches:
        with torch.inference_mode():
            expected = reference(batch).float().softmax(dim=1)
            found = candidate(batch).float().softmax(dim=1)
        images += len(batch)
        same += int((expected.argmax(dim=1) == found.argmax(dim=1)).sum())
        worst = max(worst, float((expected - found).abs().max()))
    return Agreement(images=images, same_top1=same, max_difference=worst, tolerance=PROBABILITY_TOLERANCE)


def compare_features(reference: Forward, candidate: Forward, batches: Sequence[torch.Tensor]) -> Agreement:
    """Feature vectors of `candidate` against `reference`, element by element."""
    images = 0
    worst = 0.0
    for batch in batches:
        with torch.inference_mode():
            expected = reference(batch).float()
            found = candidate(batch).float()
        if expected.shape != found.shape:
            raise ExportFailed(f"its features have shape {tuple(found.shape)}, PyTorch's {tuple(expected.shape)}")
        images += len(batch)
        worst = max(worst, float((expected - found).abs().max()))
    return Agreement(images=images, same_top1=images, max_difference=worst, tolerance=FEATURE_TOLERANCE)
