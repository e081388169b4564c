"""Shrink one model: its variants made, recovered, measured and compared, then any one shipped.

The variants, in the order a person reads them:

1. the unchanged model, fp32 in ONNX Runtime (every other variant is judged against it);
2. int8 of it (core.shrink.int8: what stays in float is chosen per model, and said);
3. for each ratio, whole channels pruned (core.shrink.prune), then a short recovery (core.shrink.recover):
   fine-tuning on the person's training images for a fine-tuned model, distillation from the unpruned
   model for a catalogue one; and that pruned model in int8;
4. the same share of single weights zeroed (core.shrink.sparsity): the file compresses, the dense CPU
   kernels run it no faster, and the table shows both.

Everything is written into one work folder; the caller owns it (a temporary folder on the page, the
`--out` folder on the command line).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core import runtime
from core.engines.onnx_export import ExportFailed, export_module
from core.errors import ZooScopeError
from core.preprocessing import model_batch
from core.progress import Progress
from core.shrink.prune import PruningUnavailable, prune_channels
from core.shrink.source import ShrinkImages, ShrinkSource
from core.shrink.variants import BATCH, Variant, count_params_and_gflops, measure, time_all, top1_of

if TYPE_CHECKING:
    from core.shrink.ship import Verified

_log = logging.getLogger(__name__)

RATIOS = (0.3, 0.5, 0.7)  # what the page offers; the command line takes any ratio in (0, 1)
DEFAULT_RATIOS = (0.5,)
# Unstructured: the share of single weights zeroed (the smallest, across the network). Without retraining
# under the mask more breaks the answers: efficientnet_lite0 agrees with itself on 0.85 of the check
# images at 30% zeros and on 0.05 at 50%.
ZEROS_SHARE = 0.3


@dataclass(frozen=True)
class ShrinkOptions:
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    int8: bool = True
    zeros: bool = True
    recover_epochs: int = 4


@dataclass
class ShrinkResult:
    source: str
    kind: str  # "catalogue" or "bundle"
    fidelity_kind: str  # "accuracy" or "agreement"
    images: str  # what the variants were recovered, calibrated and judged on
    input_size: int
    mean: tuple[float, ...]  # the input's normalisation, which an app must apply (the snippets say so)
    std: tuple[float, ...]
    variants: list[Variant] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # variants that could not be made, with the reason
    folder: Path = Path()

    def variant(self, name: str) -> Variant:
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise ZooScopeError(f"There is no variant called {name!r}: {', '.join(v.name for v in self.variants)}.")


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")


def step_count(options: ShrinkOptions) -> int:
    per_ratio = 3 + options.int8  # prune, recover, export (+ int8)
    return 1 + options.int8 + per_ratio * len(options.ratios) + options.zeros + 1


def shrink(
    source: ShrinkSource,
    images: ShrinkImages,
    folder: Path,
    options: ShrinkOptions = ShrinkOptions(),
    *,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ShrinkResult:
    """Every variant `options` asks for, measured, written into `folder`."""
    from core.shrink.sparsity import zero_smallest

    for ratio in options.ratios:
        if not 0 < ratio < 1:
            raise ZooScopeError(f"A pruning ratio is a share of the channels, between 0 and 1, not {ratio:g}.")
    folder.mkdir(parents=True, exist_ok=True)
    spec, size, preprocess = source.spec, source.spec.input_size, source.preprocess
    total, done = step_count(options), [0]

    def step(message: str) -> None:
        if progress:
            progress(done[0], total, message)
        done[0] += 1

    preset = spec.transforms()
    result = ShrinkResult(
        source=source.name, kind=source.kind, fidelity_kind=source.fidelity_kind, images=images.description,
        input_size=size, mean=tuple(preset.mean), std=tuple(preset.std), folder=folder,
    )  # fmt: skip
    if images.holdout_labels is not None:
        expected: Sequence[int] = images.holdout_labels
    else:
        expected = [int(answer) for answer in top1_of(source.module, images.holdout, preprocess)]

    def judged(
        name: str, kind: str, onnx: Path, module, ratio, notes: Sequence[str] = (), *, counts: tuple[int, float]
    ) -> Variant:
        params, gflops = counts
        variant = measure(
            name, kind, onnx=onnx, module=module, params=params, gflops=gflops, ratio=ratio,
            holdout=images.holdout, preprocess=preprocess, expected=expected, notes=notes,
        )  # fmt: skip
        result.variants.append(variant)
        return variant

    def exported(module, name: str) -> Path:
        path = folder / f"{_slug(name)}.onnx"
        try:
            export_module(module, size, path)
        except ExportFailed as error:  # every variant is measured in ONNX Runtime: without an export, none is
            raise ZooScopeError(f"{source.name} ({name}) could not be exported to ONNX: {error}") from error
        return path

    def int8_of(variant: Variant, name: str, kind: str) -> None:
        from core.shrink.int8 import quantize_keeping_answers

        step(f"Quantizing {variant.name} to int8")
        made = quantize_keeping_answers(variant.onnx, folder / f"{_slug(name)}.onnx", images.calibration, preprocess)
        kept = ", ".join(f"{node.node} ({node.reason})" for node in made.kept_float) or "none"
        notes = (f"calibrated on {made.calibration_images} images ({made.method})", f"kept in float: {kept}")
        judged(name, kind, made.path, None, variant.ratio, notes, counts=(variant.params, variant.gflops))

    stopped = should_stop or (lambda: False)
    step(f"Exporting {source.name} to ONNX")
    counts = count_params_and_gflops(source.module, size)
    original = judged(
        "fp32", "original", exported(source.module, "fp32"), source.module, None, ("unchanged",), counts=counts
    )
    if options.int8:
        int8_of(original, "int8", "int8")
    for ratio in options.ratios:
        if stopped():
            break
        name = f"pruned {ratio:.0%}"
        step(f"Pruning {ratio:.0%} of the channels")
        try:
            pruned = prune_channels(spec, source.module, ratio, classes=len(source.classes))
        except PruningUnavailable as error:
            result.refused.append(f"{name}: {error}")
            done[0] += 2 + options.int8
            continue
        step(f"Recovering {name} ({options.recover_epochs} epochs)")
        module, how = _recovered(pruned.module, source, images, options.recover_epochs, should_stop)
        step(f"Exporting {name}")
        variant = judged(
            name, "pruned", exported(module, name), module, ratio,
            (f"{pruned.params_share:.0%} of the parameters left", how),
            counts=(pruned.params_after, pruned.gflops_after),  # recovery changes weights, not shapes
        )  # fmt: skip
        if options.int8:
            int8_of(variant, f"{name} + int8", "pruned+int8")
    if options.zeros and not stopped():
        name = f"{ZEROS_SHARE:.0%} zeros"
        step(f"Zeroing {ZEROS_SHARE:.0%} of the weights")
        sparse = zero_smallest(source.module, ZEROS_SHARE)
        judged(
            name, "zeros", exported(sparse.module, name), sparse.module, ZEROS_SHARE,
            (f"{sparse.zero_share:.0%} of the weights are zero: the file compresses, dense kernels run no faster",),
            counts=counts,  # zeros are still parameters, and still multiplied
        )  # fmt: skip
    step("Timing every variant at batch 1")
    example = model_batch(images.holdout[:1], preprocess)
    result.variants = time_all(result.variants, example, all_threads=runtime.usable_cpus())
    if progress:
        progress(total, total, "Done")
    return result


def _recovered(module, source: ShrinkSource, images: ShrinkImages, epochs: int, should_stop) -> tuple[Any, str]:
    """The pruned `module` after its recovery (none for 0 epochs), and how it was recovered, in words."""
    from core.shrink.recover import recover_by_distillation, recover_with_labels

    if epochs <= 0:
        return module, "not recovered (0 epochs): the pruned weights as they are"
    if images.train_labels is not None:
        recovery = recover_with_labels(
            module, source.spec, images.train, images.train_labels, epochs=epochs, should_stop=should_stop
        )
    else:
        recovery = recover_by_distillation(
            module, source.module, source.spec, images.train, epochs=epochs, should_stop=should_stop
        )
    how = f"{recovery.kind} on {recovery.images} images, {recovery.epochs_run} epochs, {recovery.seconds:.0f} s"
    return recovery.module, f"recovered by {how}"


# --- what it needs, and shipping one ---------------------------------------------------------------


def memory_need_mb(spec_name: str, train_images: int) -> float:
    """MiB a shrink of `spec_name` needs beyond the loaded model, before it starts (what the job queue admits
    it by): the recovery's whole-network training on `train_images`, then an export and its sessions."""
    from core.finetune.config import TrainConfig
    from core.finetune.footprint import export_memory_mb, training_memory_mb

    recovery = training_memory_mb(spec_name, TrainConfig(mode="finetune", unfreeze="all"), max(train_images, 1), 0)
    return recovery + export_memory_mb(spec_name)


def ship_variant(
    result: ShrinkResult,
    name: str,
    formats: Sequence[str],
    out: Path,
    *,
    holdout: Sequence,
    preprocess,
) -> dict[str, Verified]:
    """Variant `name` written to `out` in each of `formats` ("onnx", "ort", "pte"), each file run in its own
    runtime on the held-out images and compared with the variant's answers as measured here:
    {format: core.shrink.ship.Verified}. A format that cannot be made raises its reason."""
    from core.shrink.ship import verify, write_onnx, write_ort, write_pte

    variant = result.variant(name)
    out.mkdir(parents=True, exist_ok=True)
    stem = _slug(f"{result.source} {name}")
    batches = [model_batch(holdout[start : start + BATCH], preprocess) for start in range(0, len(holdout), BATCH)]
    shipped: dict[str, Verified] = {}
    for fmt in formats:
        path = out / f"{stem}.{fmt}"
        if fmt == "onnx":
            write_onnx(variant.onnx, path)
        elif fmt == "ort":
            write_ort(variant.onnx, path)
        elif fmt == "pte":
            if variant.module is None:
                raise ZooScopeError(
                    f"{name} is int8 in ONNX Runtime's format; ExecuTorch files are made here from the fp32 "
                    "variants (the unchanged or a pruned one)."
                )
            write_pte(variant.module, result.input_size, path)
        else:
            raise ZooScopeError(f"Unknown format {fmt!r}: onnx, ort or pte.")
        shipped[fmt] = verify(fmt, path, batches, variant.top1)
    return shipped
