"""core.images against a corpus generated in memory: modes, orientation, animation, bad input."""

from __future__ import annotations

import io
import struct
import warnings
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image, ImageFile
from skimage import data as skdata

from core import images
from core.errors import ImageError
from core.images import MAX_PIXELS, SUPPORTED_TYPES, decode_image, thumbnail

W, H = 30, 20


def encode(im: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header_only(width: int, height: int) -> bytes:
    """A well-formed PNG declaring width×height whose IDAT holds no pixel data at all."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunks = png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"")) + png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def decode_error(data: bytes, **kwargs) -> str:
    with pytest.raises(ImageError) as info:
        decode_image(data, **kwargs)
    message = str(info.value)
    # One readable sentence, never a raw exception.
    assert "Traceback" not in message
    assert "\n" not in message
    assert message.endswith(".")
    assert 10 < len(message) < 200
    return message


def close(pixel, expected, tol=3) -> bool:
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, expected, strict=True))


@pytest.fixture(scope="module")
def chelsea_jpeg() -> bytes:
    return encode(Image.fromarray(skdata.chelsea()), "JPEG", quality=90)


# --- modes ----------------------------------------------------------------------------


def _palette_image() -> Image.Image:
    im = Image.new("P", (W, H))
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    return im


MODE_CASES = {
    "1": lambda: encode(Image.new("1", (W, H), 1), "PNG"),
    "L": lambda: encode(Image.new("L", (W, H), 77), "PNG"),
    "LA": lambda: encode(Image.new("LA", (W, H), (77, 255)), "PNG"),
    "P": lambda: encode(_palette_image(), "PNG"),
    "P+transparency": lambda: encode(_palette_image(), "PNG", transparency=1),
    "PA": lambda: encode(Image.new("PA", (W, H)), "TIFF"),
    "RGB": lambda: encode(Image.new("RGB", (W, H), (1, 2, 3)), "PNG"),
    "RGBA": lambda: encode(Image.new("RGBA", (W, H), (1, 2, 3, 255)), "PNG"),
    "CMYK-jpeg": lambda: encode(Image.new("CMYK", (W, H), (0, 0, 0, 0)), "JPEG"),
    "CMYK-tiff": lambda: encode(Image.new("CMYK", (W, H), (0, 0, 0, 0)), "TIFF"),
    "I;16": lambda: encode(Image.fromarray(np.full((H, W), 1000, np.uint16)), "PNG"),
    "I;16B": lambda: encode(Image.fromarray(np.full((H, W), 1000, ">u2")), "TIFF"),
    "I": lambda: encode(Image.fromarray(np.full((H, W), 7000, np.int32)), "TIFF"),
    "F": lambda: encode(Image.fromarray(np.full((H, W), 0.5, np.float32)), "TIFF"),
    "YCbCr": lambda: encode(Image.new("YCbCr", (W, H), (128, 128, 128)), "TIFF"),
    "LAB": lambda: encode(Image.new("LAB", (W, H), (50, 0, 0)), "TIFF"),
    "webp": lambda: encode(Image.new("RGB", (W, H), (9, 9, 9)), "WEBP"),
    "bmp": lambda: encode(Image.new("RGB", (W, H), (9, 9, 9)), "BMP"),
    "gif": lambda: encode(Image.new("RGB", (W, H), (9, 9, 9)), "GIF"),
}


@pytest.mark.parametrize("case", sorted(MODE_CASES))
def test_every_mode_decodes_to_rgb(case):
    data = MODE_CASES[case]()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL must not warn on ordinary uploads
        im = decode_image(data)
    assert im.mode == "RGB"
    assert im.size == (W, H)
    im.load()  # already loaded: must not need the source bytes any more


@pytest.mark.parametrize("mode", ["HSV", "La", "RGBa", "RGBX"])
def test_modes_without_a_file_format_convert_to_rgb(mode):
    # No accepted format stores these, but the conversion must hold if a decoder yields one.
    im = images._to_rgb(Image.new(mode, (W, H)))
    assert (im.mode, im.size) == ("RGB", (W, H))


def test_the_1_bit_white_stays_white_and_grey_stays_grey():
    assert decode_image(MODE_CASES["1"]()).getpixel((0, 0)) == (255, 255, 255)
    assert decode_image(MODE_CASES["L"]()).getpixel((0, 0)) == (77, 77, 77)


def test_palette_transparency_becomes_white():
    im = _palette_image()
    # Right half is palette index 1 (blue), declared transparent when saving.
    im.paste(1, (W // 2, 0, W, H))
    out = decode_image(encode(im, "PNG", transparency=1))
    assert out.getpixel((0, 0)) == (255, 0, 0)
    assert out.getpixel((W - 1, 0)) == (255, 255, 255)


def test_rgba_and_la_composite_on_white():
    rgba = Image.new("RGBA", (W, H), (255, 0, 0, 0))
    rgba.paste((255, 0, 0, 128), (0, 0, W // 2, H))
    out = decode_image(encode(rgba, "PNG"))
    assert out.getpixel((W - 1, 0)) == (255, 255, 255)  # fully transparent
    # Half-transparent red over white.
    assert close(out.getpixel((0, 0)), (255, 127, 127), tol=2)
    la = decode_image(encode(Image.new("LA", (W, H), (0, 0)), "PNG"))
    assert la.getpixel((0, 0)) == (255, 255, 255)


def test_16_bit_png_is_scaled_not_clipped():
    values = np.array([[65535, 32768, 0, 257]], dtype=np.uint16)
    out = decode_image(encode(Image.fromarray(values), "PNG"))
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert abs(out.getpixel((1, 0))[0] - 128) <= 1
    assert out.getpixel((2, 0)) == (0, 0, 0)
    assert out.getpixel((3, 0)) == (1, 1, 1)


def test_float_image_in_unit_range_is_scaled():
    values = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    out = decode_image(encode(Image.fromarray(values), "TIFF"))
    assert [out.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_32_bit_integer_image_outside_16_bit_range_is_stretched():
    values = np.array([[-5000, 0, 95000]], dtype=np.int32)
    out = decode_image(encode(Image.fromarray(values), "TIFF"))
    assert [out.getpixel((x, 0))[0] for x in range(3)] == [0, 13, 255]
    flat = decode_image(encode(Image.fromarray(np.full((2, 2), 95000, np.int32)), "TIFF"))
    assert flat.size == (2, 2)  # a constant image must not divide by zero


def test_cmyk_jpeg_colours():
    im = Image.new("CMYK", (W, H), (0, 0, 0, 0))  # white
    im.paste((255, 0, 0, 0), (0, 0, W // 2, H))  # cyan
    out = decode_image(encode(im, "JPEG", quality=95))
    assert close(out.getpixel((W - 1, H // 2)), (255, 255, 255), tol=6)
    assert close(out.getpixel((2, H // 2)), (0, 255, 255), tol=12)


def test_real_photo_round_trips(chelsea_jpeg):
    photo = skdata.chelsea()
    out = decode_image(chelsea_jpeg)
    assert out.size == (photo.shape[1], photo.shape[0])
    assert np.abs(np.asarray(out, dtype=float) - photo).mean() < 4


# --- orientation and animation --------------------------------------------------------


def _corner_jpeg(orientation: int | None, exif: bytes | None = None) -> bytes:
    im = Image.new("RGB", (40, 20), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 10, 10))  # red top-left corner as stored
    if orientation is not None:
        tags = Image.Exif()
        tags[0x0112] = orientation
        exif = tags.tobytes()
    return encode(im, "JPEG", quality=95, **({"exif": exif} if exif else {}))


def test_exif_orientation_is_applied():
    out = decode_image(_corner_jpeg(6))
    assert out.size == (20, 40)
    # Orientation 6 = "rotate 90° clockwise to display": stored top-left lands top-right.
    assert close(out.getpixel((17, 3)), (255, 0, 0), tol=20)
    assert close(out.getpixel((3, 3)), (0, 0, 255), tol=20)


# PIL warns about the EXIF itself; the decode must still succeed.
@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_broken_exif_is_ignored():
    garbage = b"Exif\x00\x00MM\x00*\xff\xff\xff\xffgarbage"
    out = decode_image(_corner_jpeg(None, exif=garbage))
    assert out.size == (40, 20)


def test_exif_that_makes_pil_fail_is_ignored(monkeypatch):
    def broken(image, **kwargs):
        # What PIL raises for some mangled EXIF blocks.
        raise SyntaxError("not a TIFF file")

    monkeypatch.setattr(images.ImageOps, "exif_transpose", broken)
    assert decode_image(_corner_jpeg(6)).size == (40, 20)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animation_returns_first_frame(fmt):
    frames = [Image.new("RGB", (W, H), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    # Really animated (APNG for PNG).
    assert Image.open(io.BytesIO(data)).n_frames == 3
    out = decode_image(data)
    assert close(out.getpixel((W // 2, H // 2)), (255, 0, 0), tol=8)


@pytest.mark.parametrize("size", [(1, 1), (20000, 40), (40, 20000)])
def test_extreme_shapes(size):
    out = decode_image(encode(Image.new("RGB", size, (5, 6, 7)), "PNG"))
    assert (out.mode, out.size) == ("RGB", size)


# --- errors ---------------------------------------------------------------------------


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("cat.jpg", b"not really")
    return buf.getvalue()


def _png_with_bad_crc() -> bytes:
    data = bytearray(encode(Image.fromarray(skdata.chelsea()[:64, :64]), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 40] ^= 0xFF  # flip a byte inside the compressed pixels
    return bytes(data)


ERROR_CASES = {
    "empty": (lambda: b"", ["empty"]),
    "random": (
        lambda: np.random.default_rng(0).bytes(4096),
        ["not a recognised image"],
    ),
    "text": (lambda: b"cat,dog\n1,2\n", ["text/HTML"]),
    "html": (
        lambda: b"<!DOCTYPE html><html><body>404 Not Found</body></html>",
        ["text/HTML"],
    ),
    "svg": (lambda: b'<?xml version="1.0"?>\n<svg width="9"/>', ["SVG", "PNG"]),
    "pdf": (lambda: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", ["PDF"]),
    "zip": (_zip_bytes, ["zip archive"]),
    "png-signature-only": (
        lambda: b"\x89PNG\r\n\x1a\n\x00\x00",
        ["truncated or corrupt"],
    ),
    "png-bad-crc": (_png_with_bad_crc, ["truncated or corrupt"]),
    "ico-not-accepted": (
        lambda: encode(Image.new("RGB", (16, 16)), "ICO"),
        ["not a recognised image"],
    ),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_bad_input_gives_a_readable_error(case):
    make, words = ERROR_CASES[case]
    message = decode_error(make())
    for word in words:
        assert word in message


def test_truncated_jpeg(chelsea_jpeg):
    assert "truncated or corrupt" in decode_error(chelsea_jpeg[: len(chelsea_jpeg) // 2])


def test_truncated_png():
    data = encode(Image.fromarray(skdata.chelsea()), "PNG")
    assert "truncated or corrupt" in decode_error(data[: len(data) // 2])


def test_header_declaring_a_huge_image_is_refused_without_decoding():
    # 10 gigapixels: PIL itself refuses this before the size reaches us.
    message = decode_error(png_header_only(100_000, 100_000))
    assert "10,000 megapixels" in message
    assert "limit is 50 megapixels" in message
    # 60 MP is under PIL's threshold, so our own check names the dimensions.
    message = decode_error(png_header_only(10_000, 6_000))
    assert "10000×6000" in message
    assert "60 megapixels" in message


def test_max_pixels_argument_and_environment(monkeypatch):
    data = encode(Image.new("RGB", (40, 40)), "PNG")
    message = decode_error(data, max_pixels=1000)
    assert "40×40" in message
    assert "limit is 1,000 pixels" in message
    monkeypatch.setenv("ZOOSCOPE_MAX_PIXELS", "1000")
    assert "limit is 1,000 pixels" in decode_error(data)
    # The argument beats the variable.
    assert decode_image(data, max_pixels=1600).size == (40, 40)
    monkeypatch.setenv("ZOOSCOPE_MAX_PIXELS", "not a number")
    assert decode_image(data).size == (40, 40)


def test_pil_globals_untouched_and_threads_agree(chelsea_jpeg):
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    inputs = [
        chelsea_jpeg,
        chelsea_jpeg[:500],
        png_header_only(100_000, 100_000),
        b"hello",
    ] * 8

    def attempt(data: bytes) -> str:
        try:
            return str(decode_image(data).size)
        except ImageError as e:
            return str(e)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(attempt, inputs))
    assert results == [attempt(data) for data in inputs]
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == before


def test_constants():
    assert MAX_PIXELS == 50_000_000
    assert MAX_PIXELS < Image.MAX_IMAGE_PIXELS
    assert {"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"} == set(SUPPORTED_TYPES)


# --- thumbnail ------------------------------------------------------------------------


def test_thumbnail_keeps_aspect_and_never_upscales():
    big = Image.new("RGB", (1000, 500))
    small = thumbnail(big)
    assert small.size == (512, 256)
    assert big.size == (1000, 500)  # a copy, not in place
    assert thumbnail(big, max_side=100).size == (100, 50)
    tiny = Image.new("RGB", (100, 50))
    assert thumbnail(tiny).size == (100, 50)
    assert thumbnail(tiny) is not tiny
    assert thumbnail(Image.new("RGB", (20000, 40))).size == (512, 1)
