"""The hostile and odd uploads of issue 5, generated in memory: every test draws the same corpus.

`corpus()` returns one `Hostile` per input, each with a file name, its bytes, what must happen
("ok": it is classified; "error": it is refused with one readable sentence naming it), and either
`words` the refusal must contain or a `check` the decoded image must pass. Nothing is written to
disk, and nothing here imports torch or streamlit.
"""

from __future__ import annotations

import io
import random
import re
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"

# A name a browser may well send: non-ASCII, a path separator, "..", a "?" and a space. It must
# be shown as given and never be taken for a path.
ODD_NAME = "../ünïcødé/☃ photo?.jpg"
# 60000 x 1 pixels in a few hundred bytes: far under the pixel limit, but the weights' own
# "resize the short side to 256" would turn it into a 15-million-pixel-wide, 11 GB intermediate.
SLIVER_NAME = "sliver-60000x1.png"
EXIF_NAME = "exif-rotated.jpg"
# Markdown, LaTeX and Streamlit's colour directive in a name: shown as typed, never as a link.
MARKDOWN_NAME = "__init__ *draft* [click me](https://example.com) $x$ :red[x].png"
_PUNCTUATION = r"!-/:-@\[-`{-~"  # every ASCII punctuation mark: what CommonMark lets a backslash escape


class Hostile(NamedTuple):
    name: str
    data: bytes
    expect: Literal["ok", "error"]
    check: Callable[[Image.Image], None] | None = None  # for "ok": asserts on the decoded image
    words: tuple[str, ...] = ()  # for "error": what the message must say
    mime: str = "image/jpeg"  # what a browser would send for the extension

    def upload(self) -> tuple[str, bytes, str]:
        """(name, bytes, mime type), as `AppTest.file_uploader(...).set_value` takes them."""
        return self.name, self.data, self.mime


def markdown_literal(markdown: str) -> str | None:
    """The text `markdown` shows if every ASCII punctuation mark in it is backslash-escaped, else None.

    So `markdown_literal(shown) == name` says a page rendered a file name exactly as typed.
    """
    if not re.fullmatch(rf"(?:\\[{_PUNCTUATION}]|[^{_PUNCTUATION}])*", markdown):
        return None
    return re.sub(rf"\\([{_PUNCTUATION}])", r"\1", markdown)


def example(name: str) -> bytes:
    return (EXAMPLES / name).read_bytes()


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_declaring(width: int, height: int) -> bytes:
    """A well-formed PNG header declaring width x height, with no pixel data behind it."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunks = png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"")) + png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def zip_archive() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("holiday/cat.jpg", example("chelsea.jpg"))
    return buffer.getvalue()


def pdf_document() -> bytes:
    return (
        b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
        b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\n"
        b"trailer << /Root 1 0 R >>\n%%EOF\n"
    )


def close(pixel: tuple[int, ...], expected: tuple[int, ...], tolerance: int) -> bool:
    return all(abs(int(a) - int(b)) <= tolerance for a, b in zip(pixel, expected, strict=True))


# --- the odd but valid images, each with what its decoded form must show ----------------------


def sixteen_bit_png() -> bytes:
    # A horizontal ramp over the whole 16-bit range: PIL's own convert() would clip it to white.
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (48, 1))
    return encode(Image.fromarray(ramp), "PNG")


def check_sixteen_bit(image: Image.Image) -> None:
    assert image.size == (64, 48)
    assert image.getpixel((0, 0)) == (0, 0, 0)
    assert image.getpixel((63, 0)) == (255, 255, 255)
    assert 110 <= image.getpixel((32, 0))[0] <= 145, "16-bit values must be scaled, not clipped"


def cmyk_jpeg() -> bytes:
    picture = Image.new("CMYK", (64, 48), (0, 0, 0, 0))  # white
    picture.paste((255, 0, 0, 0), (0, 0, 32, 48))  # the left half cyan
    return encode(picture, "JPEG", quality=95)


def check_cmyk(image: Image.Image) -> None:
    assert close(image.getpixel((4, 24)), (0, 255, 255), 16), image.getpixel((4, 24))
    assert close(image.getpixel((60, 24)), (255, 255, 255), 8), image.getpixel((60, 24))


def palette_png_with_transparency() -> bytes:
    picture = Image.new("P", (64, 48), 0)
    picture.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)  # 0: red, 1: blue
    picture.paste(1, (32, 0, 64, 48))  # the right half blue, declared transparent below
    return encode(picture, "PNG", transparency=1)


def check_palette(image: Image.Image) -> None:
    assert image.getpixel((4, 4)) == (255, 0, 0)
    assert image.getpixel((60, 4)) == (255, 255, 255), "transparent pixels are shown on white"


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (64, 48), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def check_first_frame(image: Image.Image) -> None:
    assert close(image.getpixel((32, 24)), (255, 0, 0), 8), "the first frame, not a later one"


def exif_rotated_jpeg() -> bytes:
    """The cat photo stored on its side (portrait), with EXIF orientation 6: "turn 90° clockwise"."""
    upright = Image.open(io.BytesIO(example("chelsea.jpg")))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # counter-clockwise: 300 x 451
    tags = Image.Exif()
    tags[0x0112] = 6
    return encode(stored, "JPEG", quality=92, exif=tags.tobytes())


EXIF_UPRIGHT_SIZE = (451, 300)  # chelsea.jpg as a person sees it; stored as 300 x 451


def check_upright(image: Image.Image) -> None:
    assert image.size == EXIF_UPRIGHT_SIZE, f"EXIF orientation not applied: {image.size}"


def check_size(size: tuple[int, int]) -> Callable[[Image.Image], None]:
    def check(image: Image.Image) -> None:
        assert image.size == size, image.size

    return check


def check_rgb(image: Image.Image) -> None:
    assert image.mode == "RGB" and image.size == (640, 427), (image.mode, image.size)


def corpus() -> list[Hostile]:
    """Every hostile or odd image upload the issue lists (and one more), in a fixed order."""
    coffee_jpeg = example("coffee.jpg")
    photo_png = encode(Image.open(io.BytesIO(coffee_jpeg)), "PNG")
    return [
        # Refused, each with its own reason.
        Hostile("empty.jpg", b"", "error", words=("empty",)),
        Hostile("truncated-photo.jpg", coffee_jpeg[: len(coffee_jpeg) // 2], "error", words=("truncated",)),
        Hostile(
            "truncated-photo.png", photo_png[: len(photo_png) // 2], "error", words=("truncated",), mime="image/png"
        ),
        Hostile("random-bytes.jpg", random.Random(5).randbytes(4096), "error", words=("not a recognised image",)),
        Hostile(
            "web-page.jpg",
            b"<!DOCTYPE html><html><head><title>404</title></head><body>Not Found</body></html>\n",
            "error",
            words=("text/HTML",),
        ),
        Hostile(
            "vector-drawing.jpg",
            b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="90" height="90">'
            b'<circle cx="45" cy="45" r="40"/></svg>\n',
            "error",
            words=("SVG",),
        ),
        Hostile("document.jpg", pdf_document(), "error", words=("PDF",)),
        Hostile("archive.jpg", zip_archive(), "error", words=("zip archive",)),
        Hostile(MARKDOWN_NAME, b"<script>alert(1)</script>\n", "error", words=("text/HTML",), mime="image/png"),
        Hostile(
            "pixel-bomb-100000x100000.png",
            png_declaring(100_000, 100_000),
            "error",
            words=("10,000 megapixels", "limit"),
            mime="image/png",
        ),
        # Odd, but images: each is classified.
        Hostile(
            "single-pixel.png",
            encode(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"),
            "ok",
            check=check_size((1, 1)),
            mime="image/png",
        ),
        Hostile(
            "panorama-20000x40.jpg",
            encode(Image.linear_gradient("L").resize((20000, 40)).convert("RGB"), "JPEG", quality=80),
            "ok",
            check=check_size((20000, 40)),
            mime="image/jpeg",
        ),
        Hostile(
            SLIVER_NAME,
            encode(Image.new("RGB", (60000, 1), (90, 120, 200)), "PNG"),
            "ok",
            check=check_size((60000, 1)),
            mime="image/png",
        ),
        Hostile("sixteen-bit.png", sixteen_bit_png(), "ok", check=check_sixteen_bit, mime="image/png"),
        Hostile("cmyk.jpg", cmyk_jpeg(), "ok", check=check_cmyk),
        Hostile(
            "palette-transparent.png", palette_png_with_transparency(), "ok", check=check_palette, mime="image/png"
        ),
        Hostile("animated.gif", animated_gif(), "ok", check=check_first_frame, mime="image/gif"),
        Hostile(EXIF_NAME, exif_rotated_jpeg(), "ok", check=check_upright),
        Hostile(ODD_NAME, example("rocket.jpg"), "ok", check=check_rgb),
    ]


def errors() -> list[Hostile]:
    return [case for case in corpus() if case.expect == "error"]


def accepted() -> list[Hostile]:
    return [case for case in corpus() if case.expect == "ok"]
