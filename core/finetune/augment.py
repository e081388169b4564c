"""Augmentation for fine-tuning: what each training image may look like, drawn reproducibly.

Random resized crops and colour jitter by default (timm's and torchvision's staples); horizontal
flips only when asked, because orientation can carry the class (a mirrored 2 is not a 2, and
text, arrows or X-rays flipped are other things). Training is at the model's own resolution unless
asked: a lower one makes every step cheaper but costs accuracy (resolve_train_size says why).
Evaluation always uses the weights' own preprocessing at the model's own size.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from PIL import Image
from torchvision.transforms import v2

from core import runtime
from core.datasets.labelled import LabelledImage
from core.errors import ZooScopeError
from core.finetune.depth import shapes_model
from core.finetune.extraction import decode_item
from core.models.catalog import ModelSpec
from core.preprocessing import centre_for_model

# torchvision's random transforms draw from the global generator: fork it under this lock.
_GLOBAL_RNG_LOCK = threading.Lock()


def augmentation(
    spec: ModelSpec, *, size: int | None = None, flip: bool = False, crop_scale: float = 0.6
) -> v2.Compose:
    """Random resized crops keeping at least `crop_scale` of the area, colour jitter (and flips if
    asked) on PIL images, then the weights' own normalisation, at `size` (the model's own crop size
    by default)."""
    preset = spec.transforms()
    crop = v2.RandomResizedCrop(size or preset.crop_size, scale=(crop_scale, 1.0), interpolation=preset.interpolation)
    steps = [crop]
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    steps += [
        v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05),
        v2.PILToTensor(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=preset.mean, std=preset.std),
    ]
    return v2.Compose(steps)


@contextmanager
def global_rng_seeded(seed: int) -> Iterator[None]:
    """torch's global generator forked and seeded, under the lock: torchvision's random transforms and
    its models' initialisation draw from it, and every visitor's training shares it."""
    with _GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


def augmented_batch(augment: v2.Compose, images: Sequence[Image.Image], seed: int) -> torch.Tensor:
    with global_rng_seeded(seed):
        return torch.stack([augment(image) for image in images])


def resolve_train_size(spec: ModelSpec, size: int | None) -> int:
    """The training resolution for `spec`: `size` (checked), or for None the model's own.

    The model's own by default, although a lower one makes every step cheaper: with batch-norm
    statistics frozen, features of images trained at 160 pixels and judged at 224 disagree (the
    train-test resolution discrepancy of Touvron et al., "Fixing the train-test resolution
    discrepancy", 2019), the validation loss climbs while accuracy rises, and the best epoch is
    chosen badly. bench/bench_finetune.py measured it on rendered digits: 0.88 at 160 px against
    0.97 at 224 (efficientnet_lite0, the same splits).
    """
    return check_train_size(spec, size)


def check_train_size(spec: ModelSpec, size: int | None) -> int:
    """The training resolution for `spec` (its own when None), or ZooScopeError if it cannot take it."""
    own = spec.input_size
    if size is None or size == own:
        return own
    if size > own:
        raise ZooScopeError(f"Train {spec.name} at {own} pixels or fewer (its own resolution), not {size}.")
    try:
        with runtime.TORCH_GLOBAL_STATE, torch.no_grad():  # a meta forward of a shared model
            shapes_model(spec.name)(torch.empty(1, 3, size, size, device="meta"))
    except Exception:  # noqa: BLE001 - shape checks fail in many ways: all mean "only its own size"
        raise ZooScopeError(f"{spec.name} takes only {own}-pixel images: train it at its own resolution.") from None
    return size


def training_image(item: LabelledImage, spec: ModelSpec) -> Image.Image:
    """A training image decoded once, no larger than the weights' resize needs (bounded memory)."""
    resize = spec.transforms().resize_size[0]
    image = centre_for_model(decode_item(item, resize * 2))
    short = min(image.size)
    if short > resize:
        scale = resize / short
        image = image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BICUBIC
        )
    return image
