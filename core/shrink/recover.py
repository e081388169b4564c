"""Recovery after pruning: a short training that wins back part of what removing channels cost.

Which training depends on what the person has:

- their own fine-tuned model and its labelled images: the whole pruned network fine-tunes on them,
  images -> logits of its own classes, with cross-entropy (`recover_with_labels`);
- a catalogue (ImageNet) model and unlabelled photos: knowledge distillation from the unpruned model
  (Hinton et al., "Distilling the knowledge in a neural network", 2015): the student matches the
  teacher's softened outputs, KL divergence at temperature T scaled by T^2 so the gradients keep
  their size as T changes (`recover_by_distillation`). Labels are not needed: the teacher's whole
  distribution over 1000 classes says far more per image than one label would.

Both train a copy (the given modules are only read) on core.finetune.augment's augmentation, with
AdamW at a small learning rate decayed by a cosine to zero. Batch-norm layers train: pruning changed
what every layer after a pruned one receives, so their ImageNet statistics no longer fit, and
re-estimating them is much of what recovery wins back. Their running statistics are re-estimated
over the whole recovery (a cumulative average, not the default exponential one: the 8 steps of 4
epochs on 24 photos at momentum 0.1 would leave 43% of the stale statistics in). Dropout and
stochastic depth are off: a short recovery has little to over-fit, and they draw from torch's global
generator, which every visitor's thread shares, so a seed would not repeat.

Everything is deterministic for a seed: shuffling from a private generator, augmentation per batch
from a seeded fork of the global one (core.finetune.augment.augmented_batch).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from core.errors import ZooScopeError
from core.finetune.augment import augmentation, augmented_batch
from core.jobs.queue import give_way
from core.models.catalog import ModelSpec
from core.preprocessing import centre_for_model
from core.progress import Progress
from core.runtime import configure_threads, train_channels_last

# Images per step: lite0 pruned by half saves about 38 MB of activations per image for its backward pass
# (core.finetune.micro_batch measured it), so 16 hold about 0.6 GB, which a 2.7 GB host has beside its models.
BATCH_SIZE = 16
# A small learning rate: the pruned network starts close to a good one (its surviving weights are
# the trained ones), and a large step would destroy what pruning kept. AdamW rather than SGD because
# its per-weight step sizes need no tuning per model for a run of a few dozen steps.
LEARNING_RATE = 1e-3
EPOCHS = 4
# The teacher answers the very augmented view the student sees ("consistent" teaching, Beyer et al.,
# "Knowledge distillation: a good teacher is patient and consistent", 2022). T = 1, measured here (lite0
# pruned by half, 2 epochs on the 24 calibration photos, top-1 agreement on the 39 check images): 0.49 at
# T = 1, 0.36 at 2, 0.13 at 4. A short run gains most from the teacher's top answers, which heat flattens.
TEMPERATURE = 1.0

# A loss of one augmented batch: (the student in training, the batch, the indices of its images).
BatchLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


class RecoveryInputError(ZooScopeError):
    """The images (or labels) given cannot train the pruned model (the message says why)."""


@dataclass(frozen=True)
class Recovery:
    module: nn.Module  # eval mode, frozen; a new module, never the one given
    epochs_run: int  # epochs begun: the last one may be partial when stopped
    seconds: float
    losses: list[float]  # the mean training loss of each epoch run
    kind: str  # "fine-tune" or "distillation"
    images: int
    stopped: bool  # should_stop() ended it before its last step


# Training works whatever mode the caller holds (a page may call from inference or no-grad mode, where
# copies of the weights would be inference tensors that autograd refuses).
@torch.inference_mode(False)
@torch.enable_grad()
def recover_with_labels(
    module: nn.Module,
    spec: ModelSpec,
    images: Sequence[Image.Image],
    labels: Sequence[int],
    *,
    epochs: int = EPOCHS,
    lr: float = LEARNING_RATE,
    batch_size: int = BATCH_SIZE,
    seed: int = 0,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Recovery:
    """A copy of the pruned `module` (images -> logits of its own classes) fine-tuned whole on `images`
    labelled `labels` (class indices), with cross-entropy. No flips: orientation can carry the class."""
    _check_settings(epochs, lr, batch_size)
    _check_images(images)
    if len(labels) != len(images):
        raise RecoveryInputError(f"There are {len(images)} images but {len(labels)} labels: give one label per image.")
    student = _trainable_copy(module)
    classes = _output_count(student, spec)
    targets = torch.tensor([int(label) for label in labels], dtype=torch.long)
    outside = sorted({label for label in targets.tolist() if not 0 <= label < classes})
    if outside:
        raise RecoveryInputError(
            f"The model has {classes} classes (0 to {classes - 1}); labels {outside} are not among them."
        )
    missing = sorted(set(range(classes)) - set(targets.tolist()))
    if missing:
        which = f"Class {missing[0]} has" if len(missing) == 1 else f"Classes {', '.join(map(str, missing))} have"
        raise RecoveryInputError(f"{which} no images: recovery needs examples of every class.")

    def loss(model: nn.Module, batch: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(batch), targets[indices].to(batch.device))

    return _fit(student, spec, images, loss, "fine-tune", False, epochs, lr, batch_size, seed, progress, should_stop)


@torch.inference_mode(False)
@torch.enable_grad()
def recover_by_distillation(
    student: nn.Module,
    teacher: nn.Module,
    spec: ModelSpec,
    images: Sequence[Image.Image],
    *,
    epochs: int = EPOCHS,
    temperature: float = TEMPERATURE,
    lr: float = LEARNING_RATE,
    batch_size: int = BATCH_SIZE,
    seed: int = 0,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Recovery:
    """A copy of the pruned `student` trained to give the unpruned `teacher`'s answers on augmented views
    of `images` (unlabelled photos): KL(teacher || student) on both softened by `temperature`, times T^2.

    The teacher is only read (it may be the shared model): its logits for each augmented batch are
    computed once, without autograd. Flips are fine here: the teacher sees the same flipped view.
    """
    _check_settings(epochs, lr, batch_size)
    if not temperature > 0:
        raise ValueError(f"the temperature must be positive, not {temperature}")
    _check_images(images)
    model = _trainable_copy(student)
    # A teacher left in training mode would answer from batch statistics and move its own running ones.
    judge = teacher if not any(layer.training for layer in teacher.modules()) else copy.deepcopy(teacher).eval()
    classes, teacher_classes = _output_count(model, spec), _output_count(judge, spec)
    if classes != teacher_classes:
        raise RecoveryInputError(f"The pruned model gives {classes} outputs but the teacher {teacher_classes}.")
    teacher_device = _device_of(judge)

    def loss(model: nn.Module, batch: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            soft_targets = F.log_softmax(judge(batch.to(teacher_device)).to(batch.device) / temperature, dim=1)
        log_probs = F.log_softmax(model(batch) / temperature, dim=1)
        kl = F.kl_div(log_probs, soft_targets, reduction="batchmean", log_target=True)
        return kl * temperature**2

    return _fit(model, spec, images, loss, "distillation", True, epochs, lr, batch_size, seed, progress, should_stop)


def _check_settings(epochs: int, lr: float, batch_size: int) -> None:
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"recovery needs epochs >= 1, batch_size >= 1 and lr > 0, not {epochs}, {batch_size}, {lr}")


def _check_images(images: Sequence[Image.Image]) -> None:
    if len(images) < 2:
        raise RecoveryInputError(
            f"Recovery needs at least 2 images to train on, and got {len(images)}: add some photos."
        )


def _trainable_copy(module: nn.Module) -> nn.Module:
    return copy.deepcopy(module).eval().requires_grad_(True)


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters(), torch.empty(0)).device


def _output_count(module: nn.Module, spec: ModelSpec) -> int:
    """How many logits `module` gives (one forward of one blank image, in eval mode)."""
    size = spec.input_size
    with torch.no_grad():
        return int(module(torch.zeros(1, 3, size, size, device=_device_of(module))).shape[-1])


def _prepared(image: Image.Image, spec: ModelSpec) -> Image.Image:
    """`image` in RGB and no larger than the weights' resize needs: each epoch's random crops of a
    12-megapixel photo would otherwise cost far more than the step itself."""
    image = centre_for_model(image if image.mode == "RGB" else image.convert("RGB"))
    resize = spec.transforms().resize_size[0]
    short = min(image.size)
    if short <= resize:
        return image
    scale = resize / short
    return image.resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BICUBIC
    )


def _training_mode(model: nn.Module) -> Callable[[], None]:
    """Train mode with batch-norm statistics re-estimated from scratch over the recovery, randomness off;
    returns what puts the batch-norm layers' own momentum back afterwards."""
    from torchvision.ops import StochasticDepth

    model.train()
    momenta: list[tuple[nn.modules.batchnorm._BatchNorm, float | None]] = []
    for layer in model.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.track_running_stats:
            momenta.append((layer, layer.momentum))
            layer.reset_running_stats()
            # A cumulative average of every training batch's statistics. Measured on lite0 pruned by half
            # (2 epochs): agreement with the teacher 0.36 this way, 0.0 with momentum 0.1 (the same weights).
            layer.momentum = None
        elif isinstance(layer, nn.modules.dropout._DropoutNd | StochasticDepth):
            layer.eval()

    def restore() -> None:
        for layer, momentum in momenta:
            layer.momentum = momentum

    return restore


def _batch_seed(seed: int, epoch: int, batch: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + batch) % (2**63)


def _fit(
    model: nn.Module,
    spec: ModelSpec,
    images: Sequence[Image.Image],
    batch_loss: BatchLoss,
    kind: str,
    flip: bool,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    progress: Progress | None,
    should_stop: Callable[[], bool] | None,
) -> Recovery:
    started = time.perf_counter()
    configure_threads()
    augment = augmentation(spec, flip=flip)
    pictures = [_prepared(image, spec) for image in images]
    device = _device_of(model)
    # Channels-last convolutions train about 1.6x faster on the CPU here too (lite0 pruned, batch 16).
    layout = torch.channels_last if train_channels_last(spec.traits, device) else torch.contiguous_format
    model.to(memory_format=layout)
    generator = torch.Generator().manual_seed(seed)
    # Batches of nearly equal size: never a last batch of one image, whose batch-norm statistics are noise.
    per_epoch = math.ceil(len(pictures) / batch_size)
    total = epochs * per_epoch
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)  # too few steps for decay to matter
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * step / total))
    )
    losses: list[float] = []
    done, stopped = 0, False
    restore_momenta = _training_mode(model)
    for epoch in range(1, epochs + 1):
        summed, seen = 0.0, 0
        order = torch.randperm(len(pictures), generator=generator)
        for number, indices in enumerate(torch.tensor_split(order, per_epoch)):
            give_way()  # a visitor's short work (a classify, a Grad-CAM) goes first
            batch = augmented_batch(augment, [pictures[i] for i in indices.tolist()], _batch_seed(seed, epoch, number))
            loss = batch_loss(model, batch.to(device).contiguous(memory_format=layout), indices)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            summed, seen, done = summed + float(loss.detach()) * len(indices), seen + len(indices), done + 1
            if progress:
                progress(done, total, f"Recovering by {kind}: epoch {epoch} of {epochs}, loss {summed / seen:.3f}")
            if should_stop is not None and done < total and should_stop():
                stopped = True
                break
        losses.append(summed / seen)
        if stopped:
            break
    restore_momenta()
    model.to(memory_format=torch.contiguous_format).eval().requires_grad_(False)  # laid out as it was given
    return Recovery(
        module=model,
        epochs_run=len(losses),
        seconds=time.perf_counter() - started,
        losses=losses,
        kind=kind,
        images=len(pictures),
        stopped=stopped,
    )
