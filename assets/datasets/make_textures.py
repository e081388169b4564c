"""Make the example dataset `assets/datasets/textures/` from photos that ship with scikit-image.

    .venv/bin/python assets/datasets/make_textures.py [--out assets/datasets/textures]

Three classes a person tells apart at a glance, brick, grass and gravel: each is one 512x512 grey
photo in `skimage.data` (CC0, see README.md), cut into a 5x5 grid of non-overlapping 102x102 tiles,
25 per class. The tiles do not overlap, so an image held back for validation shares no pixel with
a training image. PNG keeps the pixels exact: running this again gives the same images.

The recipe lives beside the data it makes so that the README, the images and the way to remake
them are in one folder; the app never imports it (scikit-image is a development requirement).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

CLASSES = ("brick", "grass", "gravel")  # each a skimage.data function returning a (512, 512) uint8 image
GRID = 5
TILE = 102  # 5 x 102 = 510 of the 512 pixels; the last row and column are left out
OUT = Path(__file__).resolve().parent / "textures"


def tiles(image: np.ndarray, grid: int = GRID, tile: int = TILE) -> list[np.ndarray]:
    """The grid x grid non-overlapping tile x tile squares of `image`, row by row from the top left."""
    return [image[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] for r in range(grid) for c in range(grid)]


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def make(out: Path = OUT) -> dict[str, list[Path]]:
    """Write <out>/<class>/<class>_<row><column>.png for every class; the paths written, by class."""
    written: dict[str, list[Path]] = {}
    for label in CLASSES:
        folder = out / label
        folder.mkdir(parents=True, exist_ok=True)
        written[label] = []
        for index, pixels in enumerate(tiles(getattr(data, label)())):
            path = folder / f"{label}_{index // GRID}{index % GRID}.png"
            path.write_bytes(png(pixels))
            written[label].append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"folder to write (default {OUT})")
    args = parser.parse_args()
    written = make(args.out)
    total = sum(path.stat().st_size for paths in written.values() for path in paths)
    count = sum(len(paths) for paths in written.values())
    print(f"{count} images in {len(written)} classes, {total / 1024:.0f} KB, in {args.out}")


if __name__ == "__main__":
    main()
