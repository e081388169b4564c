"""The check set: real photos and deterministic variations of them.

Whatever changes how a model computes (bf16 autocast, another runtime, int8) is checked on these
images against the plain fp32 answers: the app's example photos, each with 12 variations.
int8 is calibrated on other variations of the same photos (`calibration_images`), so its agreement
on the check set is measured on images its calibration never saw.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "assets" / "examples"


def _photos(folder: Path) -> list[Image.Image]:
    photos = []
    for path in sorted(folder.glob("*.jpg")):
        with Image.open(path) as opened:
            photos.append(opened.convert("RGB"))
    return photos


def _centre_crop(photo: Image.Image, scale: float) -> Image.Image:
    w, h = int(photo.width * scale), int(photo.height * scale)
    x, y = (photo.width - w) // 2, (photo.height - h) // 2
    return photo.crop((x, y, x + w, y + h))


def check_images(folder: Path = EXAMPLES_DIR) -> list[Image.Image]:
    """For each JPEG in `folder` (the app's example photos): the photo, its mirror image, five crops
    of 80% (corners and centre), a 60% centre crop, darker, brighter, flatter (less contrast),
    rotated by 10 degrees, and grey: 13 images per photo, no randomness.
    """
    images = []
    for photo in _photos(folder):
        width, height = photo.size
        images += [photo, ImageOps.mirror(photo)]
        for scale, corners in ((0.8, True), (0.6, False)):
            w, h = int(width * scale), int(height * scale)
            spots = [((width - w) // 2, (height - h) // 2)]
            if corners:
                spots += [(0, 0), (width - w, 0), (0, height - h), (width - w, height - h)]
            images += [photo.crop((x, y, x + w, y + h)) for x, y in spots]
        images += [
            ImageEnhance.Brightness(photo).enhance(0.7),
            ImageEnhance.Brightness(photo).enhance(1.3),
            ImageEnhance.Contrast(photo).enhance(0.7),
            photo.rotate(10, resample=Image.Resampling.BICUBIC),
            ImageOps.grayscale(photo).convert("RGB"),
        ]
    return images


def calibration_images(folder: Path = EXAMPLES_DIR) -> list[Image.Image]:
    """For each example photo, 8 variations that are not in the check set: 90% and 70% centre crops,
    the mirrored 90% crop, a little darker and brighter, more contrast, less colour, rotated by -5
    degrees. What int8 quantization measures activation ranges on; no randomness.
    """
    images = []
    for photo in _photos(folder):
        images += [
            _centre_crop(photo, 0.9),
            _centre_crop(photo, 0.7),
            ImageOps.mirror(_centre_crop(photo, 0.9)),
            ImageEnhance.Brightness(photo).enhance(0.85),
            ImageEnhance.Brightness(photo).enhance(1.15),
            ImageEnhance.Contrast(photo).enhance(1.3),
            ImageEnhance.Color(photo).enhance(0.5),
            photo.rotate(-5, resample=Image.Resampling.BICUBIC),
        ]
    return images
