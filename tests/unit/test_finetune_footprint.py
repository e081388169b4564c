"""A training's memory estimate (core.finetune.footprint): what the job queue admits it by."""

from __future__ import annotations

import pytest

from core.finetune.config import TrainConfig
from core.finetune.depth import cut_for
from core.finetune.footprint import export_memory_mb, training_memory_mb
from core.finetune.micro_batch import ACTIVATION_BUDGET
from core.models.catalog import get_spec

NAME = "efficientnet_lite0"


def finetune(depth: str, **settings) -> TrainConfig:
    return TrainConfig(mode="finetune", unfreeze=depth, **settings)


def test_training_more_of_the_network_needs_more_memory():
    need = {depth: training_memory_mb(NAME, finetune(depth), 40, 10) for depth in ("head", "last", "half", "all")}
    assert need["head"] < need["last"] <= need["half"]
    assert need["last"] < need["all"]
    # The difference between the last block and the whole network is at least their parameters' 16 bytes each.
    extra = (cut_for(NAME, "all").trainable_params - cut_for(NAME, "last").trainable_params) * 16 / 2**20
    assert need["all"] - need["last"] >= extra


@pytest.mark.parametrize("depth", ["head", "last", "half", "all"])
def test_more_images_need_more_memory(depth):
    sizes = [training_memory_mb(NAME, finetune(depth), n, n // 4) for n in (8, 80, 400)]
    assert sizes[0] < sizes[1] < sizes[2]


def test_the_head_alone_is_small_and_a_step_through_the_network_is_budgeted():
    head = training_memory_mb(NAME, finetune("head"), 60, 15)
    fast = training_memory_mb(NAME, TrainConfig(), 60, 15)
    assert fast < 512 and head < 512  # a batch through the frozen network, features and the images
    last = training_memory_mb(NAME, finetune("last"), 60, 15)
    assert last - head >= ACTIVATION_BUDGET / 2**20  # a backward through the tail: its micro-batch's activations


def test_a_lower_training_resolution_needs_less_and_an_unloaded_model_adds_its_weights():
    own = training_memory_mb(NAME, finetune("half"), 200, 50)
    assert training_memory_mb(NAME, finetune("half", train_size=128), 200, 50) < own
    unloaded = training_memory_mb(NAME, finetune("half"), 200, 50, model_loaded=False)
    assert unloaded - own == pytest.approx(get_spec(NAME).file_size_mb)


def test_an_export_needs_a_few_times_the_model():
    size = get_spec(NAME).file_size_mb
    assert 3 * size < export_memory_mb(NAME) < 2048
    assert export_memory_mb("resnet50") > export_memory_mb(NAME)
