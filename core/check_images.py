"""The check set: real photos and deterministic variations of them.

Whatever changes how a model computes (bf16 autocast, another runtime, int8) is checked on these
images against the plain fp32 answers: the app's example photos, each with 12 variations.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "examples"


def check_images(folder: Path = EXAMPLES_DIR) -> list[Image.Image]:
    """For each JPEG in `folder` (the app's example photos): the photo, its mirror image, five crops
    of 80% (corners and centre), a 60% centre crop, darker, brighter, flatter (less contrast),
    rotated by 10 degrees, and grey: 13 images per photo, no randomness.
    """
    images = []
    for path in sorted(folder.glob("*.jpg")):
        with Image.open(path) as opened:
            photo = opened.convert("RGB")
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
