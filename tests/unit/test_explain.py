"""core.classify.explain: Grad-CAM through captum on a private view of the shared model.

The real bundled model (EfficientNet-Lite0) must point at the cat wherever it sits in the image;
every curated architecture (random weights) must give a well-formed map; and the shared module
must come out of it all exactly as it went in, even with other threads classifying at once.
"""

from __future__ import annotations

import dataclasses
import itertools
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision.transforms.functional as TF
from PIL import Image
from skimage import data as skdata

from core.classify.explain import (
    Explanation,
    _explainable_view,
    _NCHWTap,
    _unit_range,
    grad_cam,
    model_view,
    overlay,
)
from core.classify.predict import classify_images
from core.errors import ZooScopeError
from core.models.catalog import CURATED, get_spec
from core.models.family_paths import resolve_layer
from core.models.loading import LoadedModel
from core.models.views import private_view
from core.preprocessing import model_input

CATS = {"tabby", "tiger cat", "Egyptian cat"}
CANVAS = 800  # the 451x300 cat fills about a sixth of it

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cat() -> Image.Image:
    return Image.fromarray(skdata.chelsea())  # 451x300 RGB


def cat_on_canvas(cat: Image.Image, corner: str) -> tuple[Image.Image, tuple[int, int]]:
    canvas = Image.new("RGB", (CANVAS, CANVAS), (128, 128, 128))
    left, top = (0, 0) if corner == "top-left" else (CANVAS - cat.width, CANVAS - cat.height)
    canvas.paste(cat, (left, top))
    return canvas, (left, top)


def box_in_view(spec, left: int, top: int, width: int, height: int) -> tuple[slice, slice]:
    """Where a box of the square canvas lands in the model's view: resize the short side, centre crop."""
    preset = spec.transforms()
    resize, crop = preset.resize_size[0], preset.crop_size[0]
    scale, offset = resize / CANVAS, (resize - crop) / 2

    def span(start: int, length: int) -> slice:
        low, high = start * scale - offset, (start + length) * scale - offset
        return slice(max(0, int(np.ceil(low))), min(crop, int(np.floor(high))))

    return span(top, height), span(left, width)


def random_loaded(name: str, seed: int = 0) -> LoadedModel:
    """A curated architecture with random weights, wrapped like a cached model."""
    spec = get_spec(name)
    torch.manual_seed(seed)
    module = spec.build()
    if spec.family == "vit":  # torchvision zero-initialises the ViT head: constant logits, no gradient
        nn.init.normal_(module.heads.head.weight, std=0.02)
    return LoadedModel(spec, module.eval().requires_grad_(False), spec.transforms(), torch.device("cpu"))


def noise_image(width: int = 80, height: int = 60, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def assert_valid(explanation: Explanation, size: int):
    heat = explanation.heatmap
    assert heat.shape == (size, size)
    assert heat.dtype == np.float32
    assert np.isfinite(heat).all()
    assert heat.min() >= 0.0 and heat.max() <= 1.0
    assert explanation.view.size == (size, size) and explanation.view.mode == "RGB"
    assert 0.0 <= explanation.probability <= 1.0


# --- the real model points at the cat ---------------------------------------------------------------


@pytest.mark.parametrize("corner", ["top-left", "bottom-right"])
def test_lite0_heat_is_on_the_cat(lite0, cat, corner):
    image, (left, top) = cat_on_canvas(cat, corner)
    explanation = grad_cam(lite0, image)

    assert explanation.label in CATS
    assert explanation.label == lite0.categories[explanation.class_index]
    rows, cols = box_in_view(lite0.spec, left, top, cat.width, cat.height)
    inside = np.zeros(explanation.heatmap.shape, dtype=bool)
    inside[rows, cols] = True
    assert inside.sum() > 50 * 50  # the cat is well inside the crop, not cut off
    peaks = np.argwhere(explanation.heatmap == explanation.heatmap.max())
    assert all(inside[r, c] for r, c in peaks), (peaks, rows, cols)
    assert explanation.heatmap[inside].mean() > 3 * explanation.heatmap[~inside].mean()


def test_model_view_is_what_the_model_sees(lite0, cat):
    view = model_view(lite0.spec, cat)
    assert view.size == (224, 224) and view.mode == "RGB"
    preset = lite0.spec.transforms()
    normalised = TF.normalize(TF.to_tensor(view), mean=preset.mean, std=preset.std)
    torch.testing.assert_close(normalised, model_input(cat, lite0.preprocess))  # what grad_cam feeds it
    levels = (normalised - lite0.preprocess(cat)).abs() * 0.5 * 255  # std 0.5: back to 0..255 levels
    assert levels.max() <= 2 + 1e-3  # the weights' transforms, to within resize rounding


def test_probability_is_the_models_softmax(lite0, cat):
    explanation = grad_cam(lite0, cat)
    with torch.inference_mode():
        probs = lite0.module(model_input(cat, lite0.preprocess).unsqueeze(0)).softmax(dim=1)[0]
    assert explanation.class_index == int(probs.argmax())
    assert explanation.probability == pytest.approx(float(probs.max()), abs=1e-6)


# --- every curated architecture -------------------------------------------------------------------


@pytest.mark.parametrize("name", [*CURATED, "swin_t", "regnet_y_400mf"])
def test_curated_models_give_valid_maps(name):
    loaded = random_loaded(name)
    explanation = grad_cam(loaded, noise_image())
    assert_valid(explanation, loaded.spec.input_size)
    assert explanation.heatmap.max() == 1.0  # some positive evidence somewhere, scaled to peak 1
    assert explanation.model == name


@pytest.mark.parametrize(("name", "grid"), [("vit_b_16", (768, 14, 14)), ("swin_t", (768, 7, 7))])
def test_layout_adapters_keep_logits_and_expose_nchw(name, grid):
    loaded = random_loaded(name)
    view, layer = _explainable_view(loaded, *loaded.spec.cam_target)
    assert any(isinstance(m, _NCHWTap) for m in view.modules())
    assert not any(isinstance(m, _NCHWTap) for m in loaded.module.modules())

    seen = []
    handle = layer.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    batch = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected, actual = loaded.module(batch), view(batch)
    handle.remove()
    assert seen == [torch.Size((2, *grid))]
    assert torch.allclose(actual, expected, atol=1e-5)


# --- the shared module is never touched -------------------------------------------------------------


def snapshot(module: nn.Module) -> list:
    return [
        (name, type(m), len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
        for name, m in module.named_modules()
    ]


@pytest.mark.parametrize("name", ["efficientnet_lite0", "vit_b_16"])
def test_shared_module_is_untouched(lite0, name):
    loaded = lite0 if name == "efficientnet_lite0" else random_loaded(name)
    batch = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        before = loaded.module(batch)
    structure = snapshot(loaded.module)
    params = dict(loaded.module.named_parameters())

    grad_cam(loaded, noise_image())

    assert snapshot(loaded.module) == structure
    assert all(not hooks for *_, f, p, b in snapshot(loaded.module) for hooks in (f, p, b))
    assert dict(loaded.module.named_parameters()) == params  # the same Parameter objects
    assert not any(p.requires_grad or p.grad is not None for p in loaded.module.parameters())
    assert not loaded.module.training
    with torch.inference_mode():
        assert torch.equal(loaded.module(batch), before)


def test_view_shares_storage_not_objects(lite0):
    view = private_view(lite0)
    shared = lite0.module.state_dict()
    own = view.state_dict()
    assert own.keys() == shared.keys()
    assert all(own[key].data_ptr() == tensor.data_ptr() for key, tensor in shared.items())
    shared_params = {id(p) for p in lite0.module.parameters()}
    assert not any(id(p) in shared_params for p in view.parameters())
    assert not view.training and not any(p.requires_grad for p in view.parameters())


def test_view_of_a_model_that_cannot_build_on_meta():
    loaded = random_loaded("regnet_y_400mf")
    view = private_view(loaded)
    assert all(
        view.state_dict()[key].data_ptr() == tensor.data_ptr() for key, tensor in loaded.module.state_dict().items()
    )


class _ScaledNet(nn.Module):
    """Tiny stand-in with a non-persistent buffer: such buffers are not in a state dict."""

    def __init__(self, weights=None, num_classes: int = 1000):
        super().__init__()
        self.layer4 = nn.Conv2d(3, 8, 3, stride=8)
        self.register_buffer("scale", torch.full((1,), 2.0), persistent=False)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layer4(x * self.scale).mean(dim=(2, 3)))


def test_view_takes_non_persistent_buffers_from_the_shared_module():
    spec = dataclasses.replace(get_spec("resnet18"), builder=_ScaledNet, build_kwargs={"num_classes": 1000})
    module = spec.build().eval().requires_grad_(False)
    loaded = LoadedModel(spec, module, spec.transforms(), torch.device("cpu"))
    view = private_view(loaded)
    assert view.scale is module.scale
    assert_valid(grad_cam(loaded, noise_image()), 224)


def test_concurrent_explanations_and_classifications(lite0, cat):
    images = [cat, noise_image(seed=1), noise_image(120, 90, seed=2)]
    names = ["cat", "noise1", "noise2"]
    reference_maps = [grad_cam(lite0, image) for image in images]
    reference_top = [c.predictions for c in classify_images(lite0, images, names)]

    def explain(worker: int) -> list[Explanation]:
        return [grad_cam(lite0, images[(worker + i) % 3]) for i in range(2)]

    def classify(_: int) -> list:
        return [[c.predictions for c in classify_images(lite0, images, names)] for _ in range(3)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        explained = [pool.submit(explain, w) for w in range(4)]
        classified = [pool.submit(classify, w) for w in range(4)]
        explained = [(w, f.result()) for w, f in enumerate(explained)]
        classified = [f.result() for f in classified]

    for worker, results in explained:
        for i, result in enumerate(results):
            expected = reference_maps[(worker + i) % 3]
            assert result.class_index == expected.class_index
            np.testing.assert_allclose(result.heatmap, expected.heatmap, atol=1e-5)
    for run in itertools.chain.from_iterable(classified):
        for got, expected in zip(run, reference_top, strict=True):
            assert [p.class_index for p in got] == [p.class_index for p in expected]
            assert [p.probability for p in got] == pytest.approx([p.probability for p in expected], abs=1e-6)


# --- choices and errors ---------------------------------------------------------------------------


def test_explicit_class_index(lite0, cat):
    explanation = grad_cam(lite0, cat, class_index=3)
    assert explanation.class_index == 3
    assert explanation.label == lite0.categories[3] == "tiger shark"
    with torch.inference_mode():
        probs = lite0.module(model_input(cat, lite0.preprocess).unsqueeze(0)).softmax(dim=1)[0]
    assert explanation.probability == pytest.approx(float(probs[3]), abs=1e-6)
    assert_valid(explanation, 224)


@pytest.mark.parametrize("class_index", [-1, 1000, 10**6])
def test_class_index_out_of_range(lite0, cat, class_index):
    with pytest.raises(ZooScopeError, match="does not exist"):
        grad_cam(lite0, cat, class_index=class_index)


def test_family_without_target(lite0, cat):
    spec = dataclasses.replace(lite0.spec, family="mystery")
    loaded = dataclasses.replace(lite0, spec=spec)
    with pytest.raises(ZooScopeError, match="not available"):
        grad_cam(loaded, cat)


def test_resolve_negative_and_named_paths():
    model = nn.Sequential()
    model.add_module("features", nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.MaxPool2d(2)))
    model.add_module("encoder", nn.Module())
    model.encoder.layers = nn.ModuleList([nn.Linear(2, 2), nn.LayerNorm(2)])
    assert resolve_layer(model, "features.-2", "m") == (model.features, "1")
    assert resolve_layer(model, "features.0", "m") == (model.features, "0")
    assert resolve_layer(model, "encoder.layers.-1", "m") == (model.encoder.layers, "1")
    assert resolve_layer(model, "features", "m") == (model, "features")
    for bad in ("features.3", "features.-4", "head", "features.0.weight", ""):
        with pytest.raises(ZooScopeError, match="no layer"):
            resolve_layer(model, bad, "m")


# --- heat map scaling and overlay -------------------------------------------------------------------


def test_unit_range_handles_flat_and_broken_maps():
    zeros = _unit_range(np.zeros((4, 4), dtype=np.float32))
    assert zeros.dtype == np.float32 and not zeros.any()
    broken = _unit_range(np.array([[np.nan, 2.0], [np.inf, 1.0]], dtype=np.float32))
    np.testing.assert_array_equal(broken, np.array([[0.0, 1.0], [0.0, 0.5]], dtype=np.float32))


def test_overlay(lite0, cat):
    explanation = grad_cam(lite0, cat)
    blended = overlay(explanation)
    assert blended.size == (224, 224) and blended.mode == "RGB"
    assert np.array_equal(np.asarray(overlay(explanation, alpha=0.0)), np.asarray(explanation.view))
    coloured = np.asarray(overlay(explanation, alpha=1.0))
    hottest = np.unravel_index(explanation.heatmap.argmax(), explanation.heatmap.shape)
    assert tuple(coloured[hottest]) == (128, 0, 0)  # jet at 1.0: dark red
    for alpha in (-0.1, 1.5):
        with pytest.raises(ValueError, match="alpha"):
            overlay(explanation, alpha=alpha)
