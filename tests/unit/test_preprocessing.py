"""core.preprocessing: the weights' own transforms, run on the crop only and on big photos reduced
first. Every preset in the catalogue must give what its `transforms()` gives, to within rounding;
big JPEGs decoded at a reduced scale must give the same answers as decoding them in full."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms._presets import ImageClassification

from core.classify.predict import classify_files, probabilities
from core.images import decode_image
from core.models.catalog import all_specs
from core.preprocessing import REDUCING_GAP, decode_side, model_batch, model_input, model_view
from tests.rounding import levels_apart

EXAMPLES = ("chelsea", "coffee", "rocket")


def _presets() -> dict[tuple, ImageClassification]:
    """One transform per distinct (resize, crop, interpolation, mean, std) in the catalogue."""
    presets = {}
    for spec in all_specs().values():
        t = spec.transforms()
        presets.setdefault((tuple(t.resize_size), tuple(t.crop_size), t.interpolation, tuple(t.std)), t)
    return presets


PRESETS = _presets()


@pytest.fixture(scope="module")
def photo(request) -> Image.Image:
    with Image.open(request.config.rootpath / "assets" / "examples" / "chelsea.jpg") as opened:
        return opened.convert("RGB")


def test_the_catalogue_has_both_interpolations_and_many_sizes():
    interpolations = {key[2] for key in PRESETS}
    assert interpolations == {InterpolationMode.BILINEAR, InterpolationMode.BICUBIC}
    assert len(PRESETS) >= 20  # 224 to 600 px crops, crops equal to and smaller than the resize


@pytest.mark.parametrize("key", list(PRESETS), ids=lambda key: f"{key[0][0]}-{key[1][0]}-{key[2].value}")
def test_every_preset_matches_its_transforms_to_within_rounding(key, photo):
    transform = PRESETS[key]
    for size in [(600, 400), (400, 600), (224, 224), (1, 1), (257, 300), (1023, 769), (255, 256), (3000, 2000)]:
        image = photo.resize(size)
        ours, reference = model_input(image, transform), transform(image)
        assert ours.shape == reference.shape and ours.dtype == reference.dtype == torch.float32
        apart = levels_apart(ours, reference, transform.std)
        # Pillow picks the order of its two resize passes by size, so the rounding between the
        # passes can land differently: at most 2 levels, on a small share of the values.
        assert apart.max() <= 2 + 1e-3, (size, float(apart.max()))
        assert apart.mean() < 0.25, (size, float(apart.mean()))


def test_slivers_stay_close_and_small(photo):
    """A 13 x 977 strip is upsampled 17 times one way: rounding between the passes shows more,
    and the reference first builds a 256 x 19246 image where ours resizes only the crop."""
    transform = PRESETS[next(iter(PRESETS))]
    for size in [(13, 977), (977, 13)]:
        image = photo.resize(size)
        apart = levels_apart(model_input(image, transform), transform(image), transform.std)
        assert apart.max() <= 8 + 1e-3 and apart.mean() < 1.0
    strip = Image.new("RGB", (60000, 1), (200, 30, 30))  # the hostile sliver: no huge intermediate
    assert model_input(strip, transform).shape == (3, 224, 224)


def test_batches_are_plain_nchw_like_the_transforms_make(photo):
    transform = PRESETS[next(iter(PRESETS))]
    batch = model_batch([photo, photo.resize((300, 500)), photo.convert("L")], transform)
    assert batch.shape == (3, 3, 224, 224) and batch.is_contiguous()
    torch.testing.assert_close(batch[2], model_input(photo.convert("L").convert("RGB"), transform))


def test_model_view_is_the_crop_before_normalising(photo):
    transform = PRESETS[next(iter(PRESETS))]
    view = model_view(photo, transform)
    assert view.size == (224, 224) and view.mode == "RGB"
    as_input = (
        torch.from_numpy(np.array(view)).permute(2, 0, 1).float() / 255 - torch.tensor(transform.mean).view(3, 1, 1)
    ) / torch.tensor(transform.std).view(3, 1, 1)
    torch.testing.assert_close(as_input, model_input(photo, transform))


def test_other_transforms_run_as_they_are(photo):
    """A transform this module does not reproduce is called unchanged, and needs the full image."""

    def custom(image: Image.Image) -> torch.Tensor:
        return torch.full((3, 8, 8), float(image.width))

    padded = ImageClassification(crop_size=300, resize_size=256)  # a crop larger than the resize pads
    assert torch.equal(model_input(photo, custom), custom(photo))
    assert torch.equal(model_input(photo, padded), padded(photo))
    assert decode_side([custom]) is None
    assert decode_side([PRESETS[next(iter(PRESETS))], padded]) is None


def test_decode_side_serves_the_largest_resize():
    small = ImageClassification(crop_size=224, resize_size=232)
    large = ImageClassification(crop_size=224, resize_size=256)
    assert decode_side([small, large]) == int(256 * REDUCING_GAP) == 768
    assert decode_side([]) is None


# --- big photos -------------------------------------------------------------------------------------


def _jpeg(image: Image.Image, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, **save)
    return buffer.getvalue()


def _phone_photo(image: Image.Image, seed: int) -> bytes:
    """`image` at 12 MP (4032 x 3024) with fine grain, so there is detail a careless shrink would alias."""
    big = np.asarray(image.convert("RGB").resize((4032, 3024), Image.Resampling.BICUBIC)).astype(np.int16)
    grain = np.random.default_rng(seed).integers(-25, 26, size=(3024, 4032, 1), dtype=np.int16)
    return _jpeg(Image.fromarray(np.clip(big + grain, 0, 255).astype(np.uint8)))


def test_a_big_jpeg_decodes_at_a_reduced_scale_that_still_serves_the_model(photo):
    data = _phone_photo(photo, seed=0)
    assert decode_image(data).size == (4032, 3024)
    assert decode_image(data, min_side=768).size == (2016, 1512)  # libjpeg's 1/2: 1512 >= 768
    assert decode_image(data, min_side=300).size == (504, 378)  # 1/8, the smallest it has
    assert decode_image(data, min_side=2000).size == (4032, 3024)  # 1/2 would be under 2000
    png = io.BytesIO()
    photo.resize((2000, 1500)).save(png, "PNG")
    assert decode_image(png.getvalue(), min_side=300).size == (2000, 1500)  # only JPEGs shrink while decoding


def test_a_reduced_decode_still_follows_the_exif_orientation(photo):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    data = _jpeg(photo.resize((3200, 2400)), exif=exif)
    assert decode_image(data).size == (2400, 3200)
    assert decode_image(data, min_side=600).size == (600, 800)


def test_phone_photos_get_the_same_answers_as_decoding_them_in_full(lite0, request):
    """classify_files decodes a 12 MP JPEG at half size and reduces before resizing; the answers
    must be those of the textbook path (full decode, the weights' transforms on the whole photo)."""
    folder = request.config.rootpath / "assets" / "examples"
    files = []
    for seed, name in enumerate(EXAMPLES):
        with Image.open(folder / f"{name}.jpg") as opened:
            files.append((f"{name}.jpg", _phone_photo(opened, seed)))
    results = classify_files(lite0, files, k=5)
    for (name, data), result in zip(files, results, strict=True):
        full = decode_image(data)
        reference = lite0.preprocess(full).unsqueeze(0)
        expected = probabilities(lite0, reference)[0]
        assert result.top1.class_index == int(expected.argmax()), name
        for prediction in result.predictions:
            assert prediction.probability == pytest.approx(float(expected[prediction.class_index]), abs=0.02), name
        ours = model_input(decode_image(data, min_side=decode_side([lite0.preprocess])), lite0.preprocess)
        assert levels_apart(ours, reference[0], lite0.preprocess.std).mean() < 1.0
