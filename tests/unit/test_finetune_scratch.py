"""Scratch mode (core.finetune.scratch): the from-scratch baseline, on the bundled EfficientNet-Lite0 and a few
tiles of the example dataset, one short epoch at 64 px, and through the command line."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
import torch

from core.datasets.labelled import Dataset
from core.errors import ZooScopeError
from core.finetune.bundle import export_bundle, import_bundle
from core.finetune.config import TrainConfig
from core.finetune.depth import check_memory, cut_for
from core.finetune.examples import example_dataset
from core.finetune.scratch import random_copies
from core.finetune.train import train
from core.finetune.trained import TrainedModel
from core.images import decode_image
from tests.cli import run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PER_CLASS = 8
# Three epochs at most, but a budget that the first one crosses: the budget, not the epochs, ends it.
CONFIG = TrainConfig(mode="scratch", epochs=3, batch_size=8, train_size=64, time_budget_s=1e-3)


@pytest.fixture(scope="module")
def tiles() -> Dataset:
    full = example_dataset()
    kept = [item for label in full.classes for item in [i for i in full.items if i.label == label][:PER_CLASS]]
    return Dataset(classes=list(full.classes), items=kept)


@pytest.fixture(scope="module")
def scratch_model(lite0, tiles) -> TrainedModel:
    return train(lite0, tiles, CONFIG)


def test_scratch_trains_every_module_from_random_weights_for_its_time(lite0, scratch_model):
    cut = cut_for("efficientnet_lite0", "all")
    assert scratch_model.depth == "all" and list(scratch_model.tuned) == list(cut.tuned)
    assert scratch_model.trained_params == cut.trainable_params
    # The time budget ended it after the first epoch; no epoch 0 (the head alone on frozen features).
    assert scratch_model.epochs_run == 1 and [log.epoch for log in scratch_model.history] == [1]
    assert not scratch_model.stopped_early and not scratch_model.stopped_by_user and scratch_model.best_epoch == 1

    pretrained = dict(lite0.module.named_parameters())
    started = random_copies(lite0.spec, cut.tuned, seed=CONFIG.seed)  # what training started from
    for path, module in scratch_model.tuned.items():
        for name, trained in module.named_parameters():
            assert not torch.equal(trained, started[path].get_parameter(name)), f"{path}.{name} did not train"
            assert not torch.allclose(trained, pretrained[f"{path}.{name}"], atol=1e-3), f"{path}.{name} is ImageNet's"


def test_scratch_round_trips_through_a_bundle_and_classifies(lite0, tiles, scratch_model):
    bundle = export_bundle(scratch_model)
    manifest = json.loads(zipfile.ZipFile(io.BytesIO(bundle)).read("manifest.json"))
    assert manifest["training"]["mode"] == "scratch" and manifest["training"]["time_budget_s"] == 1e-3
    back = import_bundle(bundle, lambda name: lite0)
    assert back.config.mode == "scratch" and list(back.tuned) == list(scratch_model.tuned)
    images = [decode_image(item.data) for item in tiles.items[:: PER_CLASS * 2]]
    assert torch.allclose(back.predict(images, lite0), scratch_model.predict(images, lite0), atol=1e-5)


def test_scratch_settings_and_memory_follow_whole_network_fine_tuning():
    config = TrainConfig(mode="scratch")
    assert config.depth == "all" and config.epochs == 200 and config.time_budget_s is None
    with pytest.raises(ZooScopeError, match="time_budget_s must be a positive number"):
        TrainConfig(mode="scratch", time_budget_s=0)
    with pytest.raises(ZooScopeError, match="needs about"):  # train() checks this before any work
        check_memory("vgg16", cut_for("vgg16", config.depth))


def test_cli_scratch_mode_reports_like_the_other_modes(capsys, tmp_path, tiles):
    for item in tiles.items:  # a folder of class folders
        (tmp_path / "data" / item.label).mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / item.label / item.name.split("/")[-1]).write_bytes(item.data)
    bundle = tmp_path / "scratch.zip"
    argv = ["finetune", str(tmp_path / "data"), "--mode", "scratch", "--seconds", "0.001", "--train-size", "64"]
    code, out, _ = run(capsys, *argv, "--epochs", "2", "--runtime", "torch", "--out", str(bundle), "--format", "json")
    assert code == 0
    report = json.loads(out)
    assert (report["mode"], report["unfreeze"], report["epochs_run"], report["best_epoch"]) == ("scratch", "all", 1, 1)
    assert report["classes"] == ["brick", "grass", "gravel"] and report["seconds"] > 0
    assert 0 <= report["val_accuracy"] <= 1 and bundle.is_file()
    code, _, err = run(capsys, "finetune", str(tmp_path / "data"), "--seconds", "5")
    assert code == 2 and "--seconds is the time budget of --mode scratch" in err
