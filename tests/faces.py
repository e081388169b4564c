"""Labelled photos for the fine-tuning tests: scikit-image's LFW subset as PNG bytes.

`skdata.lfw_subset()` holds 200 grey 25x25 images, floats in 0..1: 100 faces, then 100 non-faces.
"""

from __future__ import annotations

import functools
import io
import zipfile
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image
from skimage import data as skdata


def png(array: np.ndarray) -> bytes:
    """A PNG of a float image in 0..1 (rounded to 0..255), or of uint8 pixels as they are."""
    if array.dtype != np.uint8:
        array = np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


@functools.cache
def lfw_pngs() -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    """(faces, non-faces): 100 PNGs each, made once per test session."""
    images = skdata.lfw_subset()
    return tuple(png(a) for a in images[:100]), tuple(png(a) for a in images[100:])


def zip_of(folders: Mapping[str, Sequence[bytes]], root: str = "faces") -> bytes:
    """A zip of class folders, <root>/<label>/<label>_000.png, as people upload them."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for label, images in folders.items():
            for i, data in enumerate(images):
                archive.writestr(f"{root}/{label}/{label}_{i:03d}.png", data)
    return buffer.getvalue()
