"""Structured channel pruning (core.shrink.prune): a smaller dense network that still classifies, from a copy."""

import pytest
import torch

from core.models.catalog import get_spec
from core.models.loading import load_model
from core.shrink.prune import PruningUnavailable, prune_channels


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_half_the_channels_of_efficientnet_lite0_leave_at_most_six_tenths_of_it_and_the_shared_model_whole():
    loaded = load_model("efficientnet_lite0")  # the bundled real weights
    before = parameter_count(loaded.module)
    first = next(loaded.module.parameters()).clone()
    pruned = prune_channels(loaded.spec, loaded.module, 0.5)
    assert pruned.params_before == before
    assert pruned.params_after == parameter_count(pruned.module) <= 0.6 * before
    assert pruned.gflops_after < pruned.gflops_before
    assert pruned.gflops_before == pytest.approx(loaded.spec.gflops, rel=0.05)  # the catalogue counts multiply-adds too
    assert parameter_count(loaded.module) == before and torch.equal(next(loaded.module.parameters()), first)
    with torch.no_grad():
        out = pruned.module(torch.rand(2, 3, 224, 224))
    assert out.shape == (2, 1000) and torch.isfinite(out).all()
    assert not any(p.requires_grad for p in pruned.module.parameters())


@pytest.mark.parametrize("name", ["resnet18", "squeezenet1_1", "mobilenet_v3_small"])
def test_residual_depthwise_and_convolutional_heads_stay_consistent(name):
    spec = get_spec(name)
    pruned = prune_channels(spec, spec.build().eval(), 0.3)
    assert pruned.params_share < 0.9
    with torch.no_grad():
        assert pruned.module(torch.rand(1, 3, 224, 224)).shape == (1, len(spec.categories))  # the classes kept


def test_attention_models_and_bad_ratios_are_refused_with_a_reason():
    spec = get_spec("vit_b_16")
    with pytest.raises(PruningUnavailable, match="attention"):
        prune_channels(spec, torch.nn.Identity(), 0.5)
    small = get_spec("mobilenet_v3_small")
    for ratio in (0.0, 1.0, -0.2):
        with pytest.raises(ValueError):
            prune_channels(small, torch.nn.Identity(), ratio)


def test_an_architecture_the_library_cannot_follow_is_a_message_not_a_traceback():
    spec = get_spec("shufflenet_v2_x0_5")  # channel shuffle
    with pytest.raises(PruningUnavailable, match="shufflenet_v2_x0_5"):
        prune_channels(spec, spec.build().eval(), 0.5)
