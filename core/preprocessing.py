"""The weights' own transforms, run so a photo costs little more than the model's forward pass.

Every size, crop, interpolation, mean and std comes from the weights' `transforms()`
(torchvision's `ImageClassification`); nothing here invents a preprocessing of its own. What
changes is how much work reaching that tensor takes:

- `model_view` resizes only the centre crop the model will see: PIL's `resize(box=...)` samples
  the same source positions with the same filter as resizing the whole image and then cropping,
  so the model gets the same pixels to within rounding (Pillow picks which of its two passes runs
  first by size, so a pixel can differ by up to 2 of 255; tests/unit/test_preprocessing.py),
  for about half the work on a photo.
- Large photos are first reduced by whole factors while at least `REDUCING_GAP` times the final
  size remains, the way PIL's own `reducing_gap` does it ("indistinguishable from fair resampling
  in most cases" at 3.0, its docs say): JPEGs while decoding, at libjpeg's 1/2, 1/4, 1/8 scales
  (`decode_side`), any other image at its resize (`Image.reduce` on the crop's box only).

A transform that is not an `ImageClassification` (or one configured in a way this does not
cover) runs as it is, on the whole image.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms._presets import ImageClassification
from torchvision.transforms.functional import pil_modes_mapping

# PIL's own figure: a last resampling step of at least 3x is "indistinguishable from fair resampling".
REDUCING_GAP = 3.0

# The weights' transforms resize the short side, then keep a centred square: a sliver such as a
# 60000 x 1 PNG (260 bytes, far under the pixel limit) would first become a 15-million x 256,
# 11 GB image (MemoryError, or the server killed). Cutting the long side to MAX_ASPECT times the
# short side, around its centre, keeps everything the centre crop keeps (the resampling grid may
# shift by under a pixel); photos and panoramas up to 50:1 are untouched.
MAX_ASPECT = 50

# A model's preprocessing (torchvision's presets): a PIL image, or a uint8 CHW tensor (how
# core.classify.predict preprocesses on a GPU), to a normalised float CHW tensor.
Transform = Callable[[Image.Image | torch.Tensor], torch.Tensor]


def centre_for_model(image: Image.Image, max_aspect: int = MAX_ASPECT) -> Image.Image:
    """`image`, or the centre of it no more than `max_aspect` times longer than wide."""
    width, height = image.size
    longest = min(width, height) * max_aspect
    if width > longest:
        left = (width - longest) // 2
        return image.crop((left, 0, left + longest, height))
    if height > longest:
        top = (height - longest) // 2
        return image.crop((0, top, width, top + longest))
    return image


def _plain_preset(transform: object) -> ImageClassification | None:
    """`transform` when it is a preset this module reproduces (to within rounding): one resize, one crop size."""
    if not isinstance(transform, ImageClassification):
        return None
    # The preset wraps what it was given in a list: [256] from 256, but [(256, 240)] from a pair.
    sizes = (transform.resize_size, transform.crop_size)
    if any(len(size) != 1 or not isinstance(size[0], int) for size in sizes):
        return None
    if transform.interpolation not in pil_modes_mapping:
        return None
    resize, crop = transform.resize_size[0], transform.crop_size[0]
    return transform if crop <= resize else None  # a crop larger than the resize would pad


def decode_side(transforms: Iterable[object]) -> int | None:
    """The shortest side a decoder may shrink a photo to and still serve every one of `transforms`
    (REDUCING_GAP times the largest resize), or None when one of them needs the full image."""
    sides = []
    for transform in transforms:
        preset = _plain_preset(transform)
        if preset is None:
            return None
        sides.append(int(preset.resize_size[0] * REDUCING_GAP))
    return max(sides, default=None)


def _crop_box(size: tuple[int, int], resize: int, crop: int) -> tuple[float, float, float, float]:
    """The source rectangle that torchvision's resize-then-centre-crop turns into the crop."""
    width, height = size
    # torchvision: the short side becomes `resize`, the long side int(resize * long / short).
    if width <= height:
        new_width, new_height = resize, int(resize * height / width)
    else:
        new_width, new_height = int(resize * width / height), resize
    top = int(round((new_height - crop) / 2.0))
    left = int(round((new_width - crop) / 2.0))
    scale_x, scale_y = width / new_width, height / new_height
    return (left * scale_x, top * scale_y, (left + crop) * scale_x, (top + crop) * scale_y)


def model_view(image: Image.Image, transform: object) -> Image.Image:
    """The RGB square the model sees: the weights' resize and centre crop, as a PIL image."""
    image = centre_for_model(image if image.mode == "RGB" else image.convert("RGB"))
    preset = _plain_preset(transform)
    if preset is None:
        # Same calls the preset makes, for anything this module does not reproduce.
        resize_size = getattr(transform, "resize_size", None)
        crop_size = getattr(transform, "crop_size", None)
        if resize_size is None or crop_size is None:
            raise TypeError(f"{type(transform).__name__} has no resize_size/crop_size to show the model's view")
        interpolation = getattr(transform, "interpolation", InterpolationMode.BILINEAR)
        return TF.center_crop(TF.resize(image, resize_size, interpolation=interpolation), crop_size)
    resize, crop = preset.resize_size[0], preset.crop_size[0]
    box = _crop_box(image.size, resize, crop)
    return image.resize((crop, crop), pil_modes_mapping[preset.interpolation], box=box, reducing_gap=REDUCING_GAP)


def model_input(image: Image.Image, transform: Transform) -> torch.Tensor:
    """One image as the model's input tensor (C, H, W, float32), equal to `transform(image)` to
    within rounding."""
    return model_batch([image], transform)[0]


def model_batch(images: Sequence[Image.Image], transform: Transform) -> torch.Tensor:
    """A plain NCHW float32 batch of `images`, each as `transform` would make it (to within rounding)."""
    preset = _plain_preset(transform)
    if preset is None:
        return torch.stack([transform(centre_for_model(image)) for image in images])
    crop = preset.crop_size[0]
    batch = torch.empty((len(images), 3, crop, crop), dtype=torch.float32)
    for row, image in zip(batch, images, strict=True):
        # uint8 HWC straight into the float CHW batch: one pass, no per-image float tensor to stack.
        row.copy_(torch.from_numpy(np.array(model_view(image, preset))).permute(2, 0, 1))
    mean, std = _scaled_mean_std(tuple(preset.mean), tuple(preset.std))
    return batch.sub_(mean).div_(std)


@functools.cache
def _scaled_mean_std(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The preset's convert_image_dtype (/255) and normalize folded into one subtract and one
    divide on 0..255 values; made once per preset (only ever read, so threads may share them)."""
    return torch.tensor(mean).view(-1, 1, 1) * 255.0, torch.tensor(std).view(-1, 1, 1) * 255.0
