"""A trained model as ONNX files to take elsewhere, fp32 and int8, each with its agreement measured.

- fp32: the whole model (backbone, any trained block, the head) exported, run by ONNX Runtime on the check
  images and compared with the PyTorch model: same top-1 on how many, probabilities how far apart.
- int8: that export quantized with activation ranges measured on the person's own training images, then
  compared with fp32 on the check images, and both timed at batch 1.

Both through the catalogue's own pipeline (core.engines.verified), in a temporary folder instead of its cache.

The check images are the person's validation images (held back from training, and from the
calibration too) when the session still has the dataset the model was trained on; otherwise (a
model imported from a bundle) the example photos stand in for both, and the result says so.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from core.datasets.check_images import calibration_images, check_images
from core.datasets.labelled import Dataset, stratified_split
from core.engines import verified
from core.engines.onnx_export import check_batches
from core.finetune.bundle import onnx_file_bytes
from core.finetune.extraction import decode_item
from core.finetune.trained import TrainedModel
from core.models.loading import LoadedModel
from core.progress import Progress

MAX_CALIBRATION = 64  # training images int8's ranges are measured on
MAX_CHECK = 200  # validation images the exports are compared on


@dataclass(frozen=True)
class DeployImages:
    calibration: list[Image.Image]
    check: list[Image.Image]
    source: str  # what they are, for a person: "your 12 validation images", "the example photos"


def deploy_images(trained: TrainedModel, dataset: Dataset | None) -> DeployImages:
    """The person's training images (calibration) and validation images (check) when `dataset` is the one
    `trained` was trained on (same classes; the split is the training's own, from its seed); otherwise the
    example photos: variations for calibration, the check set for the check."""
    if dataset is not None and list(dataset.classes) == list(trained.classes):
        config = trained.config
        train_items, val_items = stratified_split(dataset.items, val_fraction=config.val_fraction, seed=config.seed)
        if train_items and val_items:
            check = [decode_item(item) for item in val_items[:MAX_CHECK]]
            return DeployImages(
                calibration=[decode_item(item) for item in train_items[:MAX_CALIBRATION]],
                check=check,
                source=f"your {len(check)} validation images",
            )
    check = check_images()
    return DeployImages(calibration_images(), check, f"the {len(check)} check photos (examples and variations)")


@dataclass(frozen=True)
class OnnxExport:
    """One downloadable ONNX file and what was measured about it."""

    kind: str  # "fp32" or "int8"
    data: bytes  # one .onnx file, weights inside, classes and preprocessing in its metadata
    reference: str  # what it was compared with: "PyTorch" (fp32) or "fp32" (int8)
    images: int
    same_top1: int
    max_difference: float  # largest probability difference from the reference
    source: str  # which images (DeployImages.source)
    ms: float | None = None  # batch-1 latency here (int8 and the fp32 it is timed against)
    reference_ms: float | None = None
    calibration_images: int = 0

    @property
    def agreement(self) -> float:
        return self.same_top1 / self.images if self.images else 0.0

    @property
    def size_mb(self) -> float:
        return len(self.data) / 2**20


def export_onnx_models(
    trained: TrainedModel,
    loaded: LoadedModel,
    images: DeployImages,
    *,
    int8: bool = True,
    progress: Progress | None = None,
) -> list[OnnxExport]:
    """[fp32] or [fp32, int8] for `trained` on its backbone `loaded` (the torch face of its handle: the
    PyTorch weights are what is exported), each compared on `images.check` (core.engines.verified)."""
    steps = 3 if int8 else 1
    reference = trained.full_module(loaded)
    spec = loaded.spec

    def say(done: int, message: str) -> None:
        if progress:
            progress(done, steps, message)

    def pytorch(batch: torch.Tensor) -> torch.Tensor:
        return reference(batch.to(loaded.device)).cpu()

    with tempfile.TemporaryDirectory(prefix="zooscope-onnx-") as folder:
        say(0, f"Exporting {trained.name} to ONNX")
        batches = check_batches(images.check, loaded.preprocess)
        fp32 = verified.export_checked(
            reference, spec.input_size, Path(folder) / "model.onnx", reference=pytorch, batches=batches
        )
        exports = [
            OnnxExport(
                kind="fp32",
                data=onnx_file_bytes(fp32.path, trained, spec),
                reference="PyTorch",
                images=fp32.agreement.images,
                same_top1=fp32.agreement.same_top1,
                max_difference=fp32.agreement.max_difference,
                source=images.source,
            )
        ]
        if not int8:
            say(steps, "Exported")
            return exports
        say(1, f"Quantizing to int8, calibrated on {len(images.calibration)} images")
        int8_path = Path(folder) / "model.int8.onnx"
        quantized = verified.quantized(fp32.path, int8_path, images.calibration, loaded.preprocess)
        say(2, f"Comparing int8 with fp32 on {images.source}")
        measured = verified.measure_int8(fp32.forward, quantized, batches)
        exports.append(
            OnnxExport(
                kind="int8",
                data=onnx_file_bytes(int8_path, trained, spec),
                reference="fp32",
                images=measured.agreement.images,
                same_top1=measured.agreement.same_top1,
                max_difference=measured.agreement.max_difference,
                source=images.source,
                ms=measured.int8_ms,
                reference_ms=measured.fp32_ms,
                calibration_images=len(images.calibration),
            )
        )
        say(steps, "Exported")
    return exports


def describe(export: OnnxExport) -> str:
    """One sentence a person reads beside the download."""
    text = (
        f"{export.size_mb:.1f} MB; same top-1 as {export.reference} on {export.same_top1} of {export.images} "
        f"({export.agreement:.1%}) of {export.source}, probabilities within {export.max_difference:.1e}"
    )
    if export.kind == "int8":
        text += (
            f"; {export.ms:.1f} ms against {export.reference_ms:.1f} ms for fp32 (batch 1, measured here); "
            f"calibrated on {export.calibration_images} images"
        )
    return text + "."
