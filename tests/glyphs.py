"""A small domain-shifted image set for the fine-tuning tests and benchmark: rendered digits.

Not natural photos: the digits 0-9 drawn with Pillow's bundled font (Aileron), each at its own
size, angle, slant, stroke width and place, in a random colour, on a random background (a plain
colour, a gradient, blotchy noise or stripes) with a few stray lines and dots, at 40x40 pixels. Fixed
seed: the same call gives the same PNG bytes on any machine with the same Pillow.

ImageNet features describe such images poorly (thin strokes on clutter, at a scale photos never
show), so a linear probe on frozen features does badly and fine-tuning has something to adapt.
"""

from __future__ import annotations

import functools
import io
import math
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CLASSES = tuple("0123456789")
SIDE = 40


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return tuple(rng.randrange(256) for _ in range(3))


def _luminance(colour: tuple[int, int, int]) -> float:
    r, g, b = colour
    return 0.299 * r + 0.587 * g + 0.114 * b


def _background(rng: random.Random, side: int) -> Image.Image:
    kind = rng.choice(("plain", "gradient", "noise", "stripes"))
    a, b = np.array(_colour(rng), float), np.array(_colour(rng), float)
    if kind == "plain":
        pixels = np.broadcast_to(a, (side, side, 3)).copy()
    elif kind == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        y, x = np.mgrid[0:side, 0:side] / (side - 1)
        t = (x * math.cos(angle) + y * math.sin(angle) + 1.5) / 3.0
        pixels = a + (b - a) * t[..., None]
    elif kind == "noise":
        coarse = np.random.default_rng(rng.randrange(2**32)).random((6, 6))
        t = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize((side, side), Image.BICUBIC)) / 255.0
        pixels = a + (b - a) * t[..., None]
    else:
        period = rng.uniform(4, 10)
        angle = rng.uniform(0, math.pi)
        y, x = np.mgrid[0:side, 0:side]
        t = (np.sin((x * math.cos(angle) + y * math.sin(angle)) * 2 * math.pi / period) + 1) / 2
        pixels = a + (b - a) * t[..., None] * 0.6
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _glyph_colour(rng: random.Random, background: Image.Image) -> tuple[int, int, int]:
    mean = _luminance(tuple(int(v) for v in np.asarray(background).reshape(-1, 3).mean(axis=0)))
    for _ in range(20):  # enough contrast to be legible, not always black on white
        colour = _colour(rng)
        if abs(_luminance(colour) - mean) > 60:
            return colour
    return (0, 0, 0) if mean > 128 else (255, 255, 255)


def glyph_image(label: str, rng: random.Random, side: int = SIDE) -> Image.Image:
    """One digit on a cluttered background, `side` pixels square."""
    image = _background(rng, side)
    colour = _glyph_colour(rng, image)
    font = ImageFont.load_default(size=rng.randint(int(side * 0.55), int(side * 0.8)))
    layer = Image.new("L", (side * 2, side * 2), 0)
    ImageDraw.Draw(layer).text((side, side), label, fill=255, font=font, anchor="mm", stroke_width=rng.randint(0, 1))
    slant = rng.uniform(-0.3, 0.3)
    layer = layer.transform(layer.size, Image.AFFINE, (1, slant, -slant * side, 0, 1, 0), Image.BILINEAR)
    layer = layer.rotate(rng.uniform(-25, 25), Image.BILINEAR)
    offset = side // 2 + rng.randint(-side // 8, side // 8), side // 2 + rng.randint(-side // 8, side // 8)
    mask = layer.crop((offset[0], offset[1], offset[0] + side, offset[1] + side))
    image.paste(Image.new("RGB", (side, side), colour), (0, 0), mask)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(1, 3)):  # stray lines and dots
        points = [(rng.uniform(0, side), rng.uniform(0, side)) for _ in range(2)]
        if rng.random() < 0.5:
            draw.line(points, fill=_colour(rng), width=rng.randint(1, 2))
        else:
            x, y = points[0]
            r = rng.uniform(1, 3)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=_colour(rng))
    return image


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@functools.cache
def glyph_pngs(per_class: int, *, seed: int = 0, side: int = SIDE) -> dict[str, tuple[bytes, ...]]:
    """label -> `per_class` PNGs of that digit; the same arguments give the same bytes."""
    rng = random.Random(seed)
    return {label: tuple(png(glyph_image(label, rng, side)) for _ in range(per_class)) for label in CLASSES}


def glyph_uploads(per_class: int, *, seed: int = 0, classes: int = len(CLASSES)) -> dict[str, list[tuple[str, bytes]]]:
    """What `core.datasets.labelled.dataset_from_uploads` takes: label -> [(file name, PNG bytes)]."""
    images = glyph_pngs(per_class, seed=seed)
    return {
        f"digit_{label}": [(f"{label}_{i:03d}.png", data) for i, data in enumerate(images[label])]
        for label in CLASSES[:classes]
    }
