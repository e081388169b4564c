"""Planted near-duplicates: distinct photos, three altered copies of each, and hard negatives.

The distinct photos are the app's three example photos and 19 more from `skimage.data` (its chelsea,
coffee and rocket are the example photos themselves, so they are not taken twice). Each original is
saved as a JPEG at quality 95, and gets three copies, fixed in advance as the alterations photo
libraries are full of:

- resized: half the width and height (Lanczos), saved again as a JPEG at quality 75 (as messaging
  apps re-save photos); the smallest originals become 86 x 224 px;
- crop: the bottom-right 90% of each side (81% of the picture), JPEG quality 90;
- mirror: flipped left to right, JPEG quality 90.

Hard negatives, different images of one kind, are measured beside them (bench/bench_duplicates.py):
the texture tiles of the example dataset (non-overlapping tiles cut from one photo per texture),
the halves of each photo (left and right: two pictures of one scene), and skimage's LFW subset
(25 x 25 px faces and non-faces).
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from skimage import data as skdata

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"
TEXTURES = Path(__file__).resolve().parents[1] / "assets" / "datasets" / "textures"
SKIMAGE_PHOTOS = (
    "astronaut",
    "camera",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "page",
    "text",
    "coins",
    "clock",
    "retina",
    "colorwheel",
    "logo",
    "cell",
    "brick",
    "grass",
    "gravel",
    "horse",
    "checkerboard",
    "shepp_logan_phantom",
)
ALTERATIONS = ("resized", "crop", "mirror")


@dataclass(frozen=True)
class Planted:
    name: str  # "<photo>.jpg" for an original, "<photo>-<alteration>.jpg" for a copy
    photo: str
    alteration: str | None  # None for the original
    data: bytes


def jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def rgb(array: np.ndarray) -> Image.Image:
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        array = np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(array).convert("RGB")


@functools.cache
def photos() -> dict[str, Image.Image]:
    """The distinct photos, by name: the example photos first."""
    found = {}
    for path in sorted(EXAMPLES.glob("*.jpg")):
        with Image.open(path) as opened:
            found[path.stem] = opened.convert("RGB")
    for name in SKIMAGE_PHOTOS:
        found[name] = rgb(getattr(skdata, name)())
    return found


def altered(image: Image.Image, alteration: str) -> bytes:
    width, height = image.size
    if alteration == "resized":
        return jpeg(image.resize((round(width / 2), round(height / 2)), Image.Resampling.LANCZOS), 75)
    if alteration == "crop":
        keep_w, keep_h = round(width * 0.9), round(height * 0.9)
        return jpeg(image.crop((width - keep_w, height - keep_h, width, height)), 90)
    if alteration == "mirror":
        return jpeg(ImageOps.mirror(image), 90)
    raise ValueError(alteration)


@functools.cache
def planted_set() -> tuple[Planted, ...]:
    """Every original followed by its three copies."""
    items = []
    for name, image in photos().items():
        items.append(Planted(f"{name}.jpg", name, None, jpeg(image, 95)))
        items += [Planted(f"{name}-{alt}.jpg", name, alt, altered(image, alt)) for alt in ALTERATIONS]
    return tuple(items)


def texture_tiles() -> list[tuple[str, str, bytes]]:
    """(texture, file name, PNG bytes) of the example dataset's tiles."""
    return [(path.parent.name, path.name, path.read_bytes()) for path in sorted(TEXTURES.glob("*/*.png"))]


def halves() -> list[tuple[str, bytes, bytes]]:
    """(photo, left half, right half) of each distinct photo, as JPEGs at quality 95."""
    pairs = []
    for name, image in photos().items():
        width, height = image.size
        left, right = image.crop((0, 0, width // 2, height)), image.crop((width // 2, 0, width, height))
        pairs.append((name, jpeg(left, 95), jpeg(right, 95)))
    return pairs
