"""core.inside.stage_maps: real activations of the offline model on real photos, through hooks on a private
view; attention rollout for ViT; nothing done to the shared model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from skimage.filters import sobel
from skimage.transform import resize

from core.inside import stage_maps as stage_maps_module
from core.inside.anatomy import anatomy
from core.inside.stage_maps import _rollout, channel_grid, heat_image, overlay, stage_maps
from tests.unit.test_explain import random_loaded

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "assets" / "examples").glob("*.jpg"))
CATS = {"tabby", "tiger cat", "Egyptian cat"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def photo(path: Path) -> Image.Image:
    return Image.open(path).convert("RGB")


def edge_correlation(view: Image.Image, mean_map: np.ndarray) -> float:
    """Pearson correlation of a stage's mean map with the crop's Sobel edges at the map's size."""
    edges = sobel(np.asarray(view.convert("L"), dtype=np.float32) / 255.0)
    edges = resize(edges, mean_map.shape, anti_aliasing=True)
    return float(np.corrcoef(edges.ravel(), mean_map.ravel())[0, 1])


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_early_stages_follow_the_edges_more_than_the_last(lite0, path):
    maps = stage_maps(lite0, photo(path))
    correlations = [edge_correlation(maps.view, stage.mean) for stage in maps.stages]
    early = max(correlations[: len(correlations) // 3])  # the first third: high-resolution stages
    last = correlations[-1]
    assert early > 0.5, correlations
    assert early > last + 0.3, correlations


def test_maps_match_the_anatomy_and_the_model(lite0):
    maps = stage_maps(lite0, photo(EXAMPLES[0]))  # chelsea.jpg
    found = anatomy("efficientnet_lite0")
    assert maps.model == "efficientnet_lite0" and maps.label in CATS
    assert [stage.stage for stage in maps.stages] == [stage.name for stage in found.stages]
    for seen, stage in zip(maps.stages, found.stages, strict=True):
        assert seen.mean.shape == stage.grid and seen.mean.dtype == np.float32
        assert seen.channels.shape == (8, *stage.grid)
        assert seen.total_channels == stage.channels and len(set(seen.channel_ids)) == 8
        assert (seen.mean >= 0).all()
        # The grid's channels are the most active: their mean |activation| is above the average channel's.
        assert seen.channels.mean() >= seen.mean.mean()
    assert maps.view.size == (224, 224) and maps.rollout is None
    # The same probability as the shared model's own forward pass: the view only reads.
    logits = lite0.forward(torch.stack([lite0.preprocess(photo(EXAMPLES[0]))]))
    assert maps.probability == pytest.approx(float(logits.softmax(1).max()), abs=0.02)


def test_arrays_and_npz_in_network_order(lite0, tmp_path):
    maps = stage_maps(lite0, photo(EXAMPLES[1]))
    arrays = maps.arrays()
    assert list(arrays) == ["input", *[stage.name for stage in anatomy("efficientnet_lite0").stages]]
    assert arrays["input"].shape == (224, 224, 3) and arrays["input"].dtype == np.uint8
    path = tmp_path / "maps.npz"
    maps.save(path)
    with np.load(path) as saved:
        assert saved.files == list(arrays)
        for key, value in arrays.items():
            np.testing.assert_array_equal(saved[key], value)


def test_the_shared_model_is_never_hooked_and_views_are_reused(lite0, monkeypatch):
    built = []
    real = stage_maps_module.private_view
    monkeypatch.setattr(stage_maps_module, "private_view", lambda loaded: built.append(1) or real(loaded))
    stage_maps_module._spare_views.clear()
    for _ in range(3):
        stage_maps(lite0, photo(EXAMPLES[2]))
    assert built == [1]  # one view, lent out and returned three times
    for module in lite0.module.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
    (view, _), *_ = stage_maps_module._spare_views[lite0.module]
    assert all(not module._forward_hooks for module in view.modules())  # removed after each use


def test_vit_rollout_on_a_view_only():
    loaded = random_loaded("vit_b_16")
    image = photo(EXAMPLES[0])
    maps = stage_maps(loaded, image)
    assert maps.rollout is not None and maps.rollout.shape == (14, 14)
    assert maps.rollout.min() == 0.0 and maps.rollout.max() == pytest.approx(1.0)
    assert [stage.mean.shape for stage in maps.stages] == [(14, 14)] * 5  # patch grid; the class token dropped
    attention = [m for m in loaded.module.modules() if isinstance(m, nn.MultiheadAttention)]
    assert len(attention) == 12  # the shared model still has its own, unwrapped
    assert all(type(layer.self_attention) is nn.MultiheadAttention for layer in loaded.module.encoder.layers)
    logits = loaded.forward(torch.stack([loaded.preprocess(image)]))
    assert maps.probability == pytest.approx(float(logits.softmax(1).max()), abs=1e-3)


def test_swin_maps_come_off_channels_last_with_no_rollout():
    maps = stage_maps(random_loaded("swin_t"), photo(EXAMPLES[1]))
    assert [stage.mean.shape for stage in maps.stages] == [(56, 56), (56, 56), (28, 28), (14, 14), (7, 7)]
    assert [stage.total_channels for stage in maps.stages] == [96, 96, 192, 384, 768]
    assert maps.rollout is None


def test_rollout_is_the_product_of_residual_mixed_attention():
    rng = np.random.default_rng(0)
    layers = []
    for _ in range(3):
        weights = rng.random((5, 5))
        layers.append(weights / weights.sum(axis=1, keepdims=True))
    expected = np.eye(5)
    for weights in layers:
        mixed = 0.5 * weights + 0.5 * np.eye(5)
        expected = (mixed / mixed.sum(axis=1, keepdims=True)) @ expected
    patches = expected[0, 1:].reshape(2, 2)
    patches = (patches - patches.min()) / (patches.max() - patches.min())
    got = _rollout([torch.tensor(weights, dtype=torch.float32)[None] for weights in layers])
    np.testing.assert_allclose(got, patches, atol=1e-5)


def test_pictures(lite0):
    maps = stage_maps(lite0, photo(EXAMPLES[0]))
    grid = channel_grid(maps.stages[3], columns=4, cell=50, gap=2)
    assert grid.size == (4 * 50 + 3 * 2, 2 * 50 + 2)
    assert heat_image(maps.stages[-1].mean, 70).size == (70, 70)
    blended = overlay(maps.view, maps.stages[2].mean)
    assert blended.size == maps.view.size and blended.mode == "RGB"
