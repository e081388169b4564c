"""core.models.footprints: the memory the queue admits heavy work by, estimated before it starts."""

from __future__ import annotations

import pytest
import torch
import torchvision

from core.models import footprints
from core.models.catalog import get_spec


def test_weights_are_four_bytes_a_parameter_as_the_files_say():
    for name in ("resnet50", "vgg16", "efficientnet_b0"):
        spec = get_spec(name)
        assert footprints.weights_mb(spec.num_params) == pytest.approx(spec.file_size_mb, rel=0.05)


def test_activations_follow_the_measured_families_and_the_batch():
    resnet = footprints.activations_mb(224, "resnet")
    assert footprints.activations_mb(224, "vgg") > 2 * resnet  # full-resolution 64-channel maps
    assert footprints.activations_mb(224, "resnet", batch=16) == pytest.approx(16 * resnet)
    assert footprints.activations_mb(224, "no such family") >= resnet  # unmeasured: on the safe side


def test_global_attention_grows_with_the_square_of_the_tokens():
    at_224, at_518 = footprints.activations_mb(224, "vit"), footprints.activations_mb(518, "vit")
    area = (518 / 224) ** 2
    assert at_518 == pytest.approx(at_224 * area * area)  # pixels x tokens
    assert footprints.activations_mb(448, "swin") == pytest.approx(4 * footprints.activations_mb(224, "swin"))


def test_the_estimate_holds_a_real_forwards_largest_activations():
    # A lower bound that is measured, not assumed: the two largest tensors one layer reads and writes
    # are alive together at some point of any forward.
    model = torchvision.models.resnet18(weights=None).eval()
    sizes: list[int] = []
    for module in model.modules():
        if not list(module.children()):
            module.register_forward_hook(lambda m, args, out: sizes.append(args[0].numel() + out.numel()))
    batch = 4
    with torch.inference_mode():
        model(torch.zeros(batch, 3, 224, 224))
    largest_mb = max(sizes) * 4 / 2**20
    assert footprints.activations_mb(224, "resnet", batch=batch) >= largest_mb


def test_embedding_counts_the_result_and_the_weights_only_where_not_loaded():
    spec = get_spec("resnet50")
    common = dict(params=spec.num_params, input_size=224, family="resnet", dimensions=2048, batch=32)
    few = footprints.embedding_mb(images=10, **common)
    many = footprints.embedding_mb(images=100_000, **common)
    assert many - few == pytest.approx((100_000 - 10) * 2048 * 4 / 2**20 + footprints.activations_mb(224, "resnet", 22))
    assert footprints.embedding_mb(images=10, weights_loaded=False, **common) == pytest.approx(
        few + footprints.weights_mb(spec.num_params)
    )
    with_thumbnails = footprints.embedding_mb(images=10, thumbnail_side=96, **common)
    assert with_thumbnails - few == pytest.approx(10 * 3 * 96 * 96 / 2**20)


def test_explaining_and_exporting_cost_more_than_a_forward():
    forward = footprints.activations_mb(224, "resnet")
    assert footprints.grad_cam_mb(input_size=224, family="resnet") == footprints.BACKWARD_FACTOR * forward
    assert footprints.stage_maps_mb(input_size=224, family="resnet") > forward
    params = get_spec("resnet50").num_params
    onnx = footprints.export_mb(params=params, input_size=224, family="resnet", engine="onnx")
    int8 = footprints.export_mb(params=params, input_size=224, family="resnet", engine="int8")
    assert int8 > onnx > footprints.EXPORT_WEIGHT_COPIES * footprints.weights_mb(params)
    loaded = footprints.export_mb(params=params, input_size=224, family="resnet", engine="onnx", weights_loaded=True)
    assert onnx - loaded == pytest.approx(footprints.weights_mb(params))
