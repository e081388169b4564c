"""Unstructured pruning (core.shrink.sparsity): half the weights zeroed on a copy, the shapes kept, and what
that buys measured as it is, a file that compresses."""

import io

import pytest
import torch
import torch.nn as nn

from core.models.loading import load_model
from core.shrink.sparsity import compressed_mb, zero_share, zero_smallest


def saved(module: nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.getvalue()


def conv_and_linear_weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: layer.weight for name, layer in module.named_modules() if isinstance(layer, nn.Conv2d | nn.Linear)}


def test_half_the_weights_of_efficientnet_lite0_become_zeros_in_a_copy_of_the_same_shape():
    loaded = load_model("efficientnet_lite0")  # the bundled real weights
    originals = {name: weight.clone() for name, weight in conv_and_linear_weights(loaded.module).items()}
    keys = list(loaded.module.state_dict())

    sparse = zero_smallest(loaded.module, 0.5)

    assert sparse.amount == 0.5 and sparse.zero_share == pytest.approx(0.5, abs=0.005)
    assert zero_share(loaded.module) < 0.01  # the given model keeps its weights
    for name, weight in conv_and_linear_weights(loaded.module).items():
        assert torch.equal(weight, originals[name])
    zeroed = conv_and_linear_weights(sparse.module)
    assert sorted(sparse.module.state_dict()) == sorted(keys)  # plain weights: no masks or *_orig left behind
    assert not any(layer._forward_pre_hooks for layer in sparse.module.modules())  # nor pruning hooks
    assert all(zeroed[name].shape == weight.shape for name, weight in originals.items())
    # Ranked globally by magnitude: every weight kept is at least as large as every weight zeroed.
    kept = torch.cat([originals[name][zeroed[name] != 0].abs() for name in originals])
    dropped = torch.cat([originals[name][zeroed[name] == 0].abs() for name in originals])
    assert kept.min() >= dropped.max()
    assert not sparse.module.training and not any(p.requires_grad for p in sparse.module.parameters())
    with torch.no_grad():
        out = sparse.module(torch.rand(2, 3, 224, 224))
    assert out.shape == (2, 1000) and torch.isfinite(out).all()

    # What the zeros buy: the saved weights, the same size raw, deflate to far less.
    dense_bytes, sparse_bytes = saved(loaded.module), saved(sparse.module)
    assert len(sparse_bytes) == pytest.approx(len(dense_bytes), rel=0.01)
    assert compressed_mb(sparse_bytes) < 0.75 * compressed_mb(dense_bytes)


def test_compressed_size_is_the_same_from_a_file_or_its_bytes_and_follows_the_content(tmp_path):
    zeros, noise = bytes(4 << 20), torch.rand(1 << 20).numpy().tobytes()  # 4 MB each
    path = tmp_path / "noise.bin"
    path.write_bytes(noise)
    assert compressed_mb(path) == compressed_mb(str(path)) == compressed_mb(noise)
    assert compressed_mb(zeros) < 0.01  # a run of zeros costs almost nothing
    assert 3.0 < compressed_mb(noise) <= 4.1  # random floats hardly compress


@pytest.mark.parametrize("amount", [0.0, 1.0, -0.1, 1.5])
def test_an_amount_outside_zero_to_one_is_refused(amount):
    with pytest.raises(ValueError, match="between 0 and 1"):
        zero_smallest(nn.Linear(4, 2), amount)


def test_a_small_net_is_zeroed_across_all_its_layers_together():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 10)).eval()
    with torch.no_grad():
        net[0].weight.add_(net[0].weight.sign())  # each above 1: larger than any of the linear layer's (< 0.09)
    sparse = zero_smallest(net, 0.3)
    assert int((sparse.module[0].weight == 0).sum()) == 0  # so the zeros all fall in the linear layer
    assert sparse.zero_share == pytest.approx(0.3, abs=0.01)
    with pytest.raises(ValueError, match="no convolution or linear"):
        zero_smallest(nn.Sequential(nn.ReLU()), 0.5)
