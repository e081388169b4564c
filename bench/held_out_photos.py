"""Held-out photos for the int8 bench: sample photos that ship with scikit-image, scikit-learn and matplotlib
(dev requirements; nothing is downloaded), none of them the app's three example photos (scikit-image's cat() is
chelsea, so it is left out), each with check_images()'s 13 variations: 156 images int8 is never calibrated on.

The same set core/shrink/int8.py's table was measured on (astronaut ... horse); its first six are everyday photos.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

SKIMAGE = ("astronaut", "camera", "clock", "retina", "immunohistochemistry", "page", "grass", "logo", "horse")


def _rgb(array: np.ndarray) -> Image.Image:
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.dtype != np.uint8:
        array = (255 * (array - array.min()) / max(1e-9, float(array.max() - array.min()))).astype(np.uint8)
    if array.ndim == 2:
        array = np.stack([array] * 3, -1)
    return Image.fromarray(array[..., :3]).convert("RGB")


def photos() -> dict[str, Image.Image]:
    """The 12 photos by name; ImportError where scikit-image, scikit-learn or matplotlib is missing."""
    import matplotlib
    import skimage.data
    import sklearn.datasets

    found = {name: _rgb(np.asarray(getattr(skimage.data, name)())) for name in SKIMAGE}
    for name in ("china", "flower"):
        with Image.open(Path(sklearn.datasets.__file__).parent / "images" / f"{name}.jpg") as opened:
            found[name] = opened.convert("RGB")
    with Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg") as opened:
        found["grace_hopper"] = opened.convert("RGB")
    return found


def skimage_photos() -> list[Image.Image]:
    """Every photo with check_images()'s 13 variations (the same code, through a folder of JPEGs)."""
    from core.datasets.check_images import check_images

    with tempfile.TemporaryDirectory() as folder:
        for name, photo in photos().items():
            photo.save(Path(folder) / f"{name}.jpg", quality=95)
        return check_images(Path(folder))
