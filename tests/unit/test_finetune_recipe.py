"""Fine-tuning that adapts: the recipe beats a linear probe on images unlike ImageNet's, and everything
around it (depths, the prefix/tail split, batch norm, stopping, estimates, the LR finder) holds.

The domain-shifted set is tests/glyphs.py: rendered digits on cluttered backgrounds, fixed seed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from core.datasets.labelled import Dataset, dataset_from_uploads, stratified_split
from core.errors import ZooScopeError
from core.features.backbone import backbone_view
from core.finetune import depth as depth_module
from core.finetune.augment import resolve_train_size
from core.finetune.bundle import export_bundle, import_bundle
from core.finetune.config import EpochLog, TrainConfig
from core.finetune.deeper import finetune_optimizer
from core.finetune.depth import DEPTHS, check_memory, cut_for, meta_model
from core.finetune.estimate import DepthCost, estimate_seconds, measure_costs
from core.finetune.extraction import FeatureCache, extract_features
from core.finetune.lr_find import find_lr, valley
from core.finetune.tail import split_backbone
from core.finetune.train import train
from core.images import decode_image
from core.models.catalog import get_spec
from core.models.family_paths import expand_patterns
from core.models.loading import LoadedModel
from tests.families import smallest_of_each_family
from tests.glyphs import glyph_uploads

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# The gap test: fine-tune mode's defaults (the last half, the model's own 224 px, 8 epochs) with two cached
# views instead of four, on a set small enough for the suite: 10 digits x 12 (96 training images), judged
# on 100 more drawn with another seed; the probe is scikit-learn's, on the same training images. The goal is
# the issue's own, 0.15; measured 0.33 at this size (0.48 -> 0.81; bench/bench_finetune.py measures 250 images).
GAP_CLASSES = 10
GAP_PER_CLASS = 12
GAP_TEST_PER_CLASS = 10
GAP = 0.15
GAP_CONFIG = TrainConfig(mode="finetune", views=2)


def hashes(module: nn.Module) -> dict[str, str]:
    named = [*module.named_parameters(), *module.named_buffers()]
    return {name: hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest() for name, t in named}


@pytest.fixture(scope="module")
def cache() -> FeatureCache:
    return FeatureCache()


@pytest.fixture(scope="module")
def glyphs() -> Dataset:
    return dataset_from_uploads(glyph_uploads(GAP_PER_CLASS, classes=GAP_CLASSES))


@pytest.fixture(scope="module")
def small_glyphs() -> Dataset:
    return dataset_from_uploads(glyph_uploads(6, classes=3))


# --- the goal: fine-tuning adapts where frozen features fall short -----------------------------------


def test_finetune_beats_a_linear_probe_on_images_unlike_imagenet(lite0, glyphs, cache):
    from sklearn.linear_model import LogisticRegression

    held_out = dataset_from_uploads(glyph_uploads(GAP_TEST_PER_CLASS, seed=1, classes=GAP_CLASSES))
    y_test = np.array([glyphs.classes.index(item.label) for item in held_out.items])
    train_items, _ = stratified_split(glyphs.items, val_fraction=GAP_CONFIG.val_fraction, seed=GAP_CONFIG.seed)
    y_train = np.array([glyphs.classes.index(item.label) for item in train_items])
    view = backbone_view(lite0)
    features = extract_features(
        view.module, lite0.preprocess, [*train_items, *held_out.items], backbone=lite0.name, cache=cache
    ).numpy()
    probe = LogisticRegression(max_iter=5000).fit(features[: len(train_items)], y_train)
    probe_accuracy = probe.score(features[len(train_items) :], y_test)

    trained = train(lite0, glyphs, GAP_CONFIG, cache=cache)  # the same split: the same config seed
    probabilities = trained.predict([decode_image(item.data) for item in held_out.items], lite0)
    finetuned_accuracy = float((probabilities.argmax(dim=1).numpy() == y_test).mean())
    assert trained.best_epoch >= 1  # the kept model is a fine-tuned one, not the head alone
    assert finetuned_accuracy >= probe_accuracy + GAP, (probe_accuracy, finetuned_accuracy)


# --- where the network is cut ---------------------------------------------------------------------


def test_lite0_cuts_follow_the_family_table():
    assert expand_patterns(meta_model(get_spec("efficientnet_lite0")), ("bn1", "blocks.*", "bn2")) == [
        "bn1",
        *(f"blocks.{i}" for i in range(7)),
        "bn2",
    ]
    last, half, whole = (cut_for("efficientnet_lite0", depth) for depth in ("last", "half", "all"))
    assert (last.start, last.tuned) == ("blocks.6", ("blocks.6", "conv_head", "bn2"))
    assert half.start == "blocks.3" and half.prefix == ("conv_stem", "bn1", "blocks.0", "blocks.1", "blocks.2")
    assert half.groups == (("blocks.3",), ("blocks.4",), ("blocks.5",), ("blocks.6",), ("conv_head", "bn2"))
    assert whole.start == "conv_stem" and whole.prefix == () and whole.tuned[:3] == ("conv_stem", "bn1", "blocks.0")
    assert cut_for("efficientnet_lite0", "head").start is None
    assert last.trainable_params < half.trainable_params < whole.trainable_params


@pytest.mark.parametrize("name", smallest_of_each_family())
def test_every_family_cuts_into_a_prefix_and_a_tail(name):
    previous = None
    for depth in DEPTHS[1:]:
        cut = cut_for(name, depth)
        assert cut.start == cut.tail[0]
        overlapping = [
            (a, b) for a in cut.tail for b in cut.prefix if a == b or a.startswith(f"{b}.") or b.startswith(f"{a}.")
        ]
        assert not overlapping, overlapping
        assert set(cut.tuned) <= set(cut.tail)
        grouped = [path for group in cut.groups for path in group]
        assert grouped == [path for path in cut.tail if path in grouped] and set(grouped) <= set(cut.tuned)
        if previous is not None:
            assert set(previous.tuned) <= set(cut.tuned) or previous.trainable_params <= cut.trainable_params
        previous = cut


def _random_model(name: str) -> LoadedModel:
    spec = get_spec(name)
    torch.manual_seed(0)
    module = spec.build().eval().requires_grad_(False)
    return LoadedModel(spec=spec, module=module, preprocess=spec.transforms(), device=torch.device("cpu"))


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "regnet_y_400mf", "vit_b_16"])
def test_the_tail_fed_the_prefix_output_computes_the_whole_network(name):
    loaded = _random_model(name)
    side = 224 if name.startswith("vit") else 96
    batch = torch.randn(1, 3, side, side)
    before = hashes(loaded.module)
    for depth in DEPTHS:
        split = split_backbone(loaded, cut_for(name, depth))
        with torch.no_grad():
            expected = backbone_view(loaded).module(batch)
            assert torch.allclose(split.tail(split.prefix(batch), side), expected, atol=1e-5), depth
            assert torch.allclose(split.full.module(batch), expected, atol=1e-5), depth
    assert hashes(loaded.module) == before


def test_training_is_at_the_models_own_resolution_unless_asked():
    # Lower resolutions train faster but, with batch norm frozen, judge worse at the model's own
    # (core.finetune.augment.resolve_train_size): the default is the model's own.
    assert resolve_train_size(get_spec("efficientnet_lite0"), None) == 224
    assert resolve_train_size(get_spec("efficientnet_lite0"), 160) == 160
    assert resolve_train_size(get_spec("vit_b_16"), None) == 224
    assert resolve_train_size(get_spec("inception_v3"), None) == 299


def test_too_much_to_train_is_refused_with_the_reason():
    with pytest.raises(ZooScopeError, match=r"vgg16's last block \(122 M parameters\).*MB this app allows"):
        check_memory("vgg16", cut_for("vgg16", "last"))
    check_memory("resnet50", cut_for("resnet50", "all"))  # 24 M parameters: fine
    with pytest.raises(ZooScopeError, match="vit_b_16 takes only 224-pixel images"):
        train(
            LoadedModel(get_spec("vit_b_16"), meta_model(get_spec("vit_b_16")), None, torch.device("cpu")),
            dataset_from_uploads(glyph_uploads(2, classes=2)),
            TrainConfig(mode="finetune", unfreeze="last", train_size=160),
        )


# --- batch norm, the shared model ----------------------------------------------------------------


def _one_step(split, head: nn.Module, batch: torch.Tensor, *, adapt: bool) -> None:
    optimizer = torch.optim.AdamW([*head.parameters(), *split.parameters()], lr=1e-3)
    split.train(adapt_batchnorm=adapt)
    loss = nn.functional.cross_entropy(head(split.tail(split.prefix(batch), batch.shape[-1])), torch.tensor([0, 1]))
    loss.backward()
    optimizer.step()
    split.eval()


@pytest.mark.parametrize("adapt", [False, True])
def test_batchnorm_statistics_stay_frozen_unless_asked_and_only_in_the_copies(lite0, adapt):
    before = hashes(lite0.module)
    split = split_backbone(lite0, cut_for(lite0.name, "half"))
    _one_step(split, nn.Linear(split.feature_dim, 2), torch.randn(2, 3, 96, 96), adapt=adapt)
    norms = {
        f"{path}.{name}".rstrip("."): layer
        for path, module in split.tuned.items()
        for name, layer in module.named_modules()
        if isinstance(layer, nn.BatchNorm2d)
    }
    assert len(norms) > 10
    shared = dict(lite0.module.named_modules())
    moved = [name for name, layer in norms.items() if not torch.equal(layer.running_mean, shared[name].running_mean)]
    assert (len(moved) == len(norms)) if adapt else not moved
    assert all(not torch.equal(layer.weight, shared[name].weight) for name, layer in norms.items())  # weights train
    assert hashes(lite0.module) == before


def test_earlier_stages_learn_slower_and_only_weights_decay(lite0):
    config = TrainConfig(mode="finetune", unfreeze="half", lr=1e-3, body_lr=0.5, layer_decay=0.5, weight_decay=0.05)
    split = split_backbone(lite0, cut_for(lite0.name, "half"))
    head = nn.Linear(split.feature_dim, 3)
    groups = finetune_optimizer(head, split, config).param_groups
    rate_of = {id(p): group["lr"] for group in groups for p in group["params"]}
    assert rate_of[id(head.weight)] == rate_of[id(head.bias)] == 1e-3
    stages = [split.tuned[path] for path in ("bn2", "blocks.6", "blocks.5", "blocks.4", "blocks.3")]
    expected = [5e-4, 2.5e-4, 1.25e-4, 6.25e-5, 3.125e-5]  # conv_head and bn2 end the last stage together
    assert [rate_of[id(next(stage.parameters()))] for stage in stages] == pytest.approx(expected)
    decay_of = {id(p): group["weight_decay"] for group in groups for p in group["params"]}
    assert decay_of[id(split.tuned["conv_head"].weight)] == decay_of[id(head.weight)] == 0.05
    assert decay_of[id(split.tuned["bn2"].weight)] == decay_of[id(head.bias)] == 0.0
    assert sum(len(group["params"]) for group in groups) == len([*head.parameters(), *split.parameters()])


# --- stopping, progress, early stopping ----------------------------------------------------------

CHEAP = TrainConfig(mode="finetune", unfreeze="last", epochs=3, batch_size=8, views=1, train_size=96)


def test_stop_after_an_epoch_keeps_the_best_so_far(lite0, small_glyphs, cache):
    logs: list[EpochLog] = []
    messages: list[str] = []
    trained = train(
        lite0,
        small_glyphs,
        CHEAP,
        cache=cache,
        on_epoch=logs.append,
        progress=lambda done, total, message: messages.append(message),
        should_stop=lambda: len(logs) >= 2,
    )
    assert [log.epoch for log in logs] == [0, 1] and trained.history == logs
    assert trained.epochs_run == 1 and trained.stopped_by_user and not trained.stopped_early
    assert trained.best_epoch == min(logs, key=lambda log: log.val_loss).epoch
    assert any(message.startswith("Running the frozen layers once per image and view") for message in messages)
    assert any(message.startswith("Epoch 1 of 3") and "images/s" in message for message in messages)
    assert logs[1].images_per_second > 0 and math.isfinite(logs[1].images_per_second)


class Interrupted(BaseException):
    """What Streamlit raises in a callback when a click stops the script."""


def test_an_interruption_while_caching_keeps_the_head_trained_alone(lite0, small_glyphs, cache):
    kept = []

    def progress(done, total, message):
        if message.startswith("Running the frozen layers") and done > 4:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(lite0, small_glyphs, CHEAP, cache=cache, progress=progress, on_interrupt=kept.append)
    (model,) = kept
    assert model.stopped_by_user and model.best_epoch == 0 and model.tuned == {} and model.epochs_run == 0
    assert model.predict([decode_image(small_glyphs.items[0].data)], lite0).shape == (1, 3)


def test_an_interruption_after_an_epoch_keeps_the_best_state(lite0, small_glyphs, cache):
    kept, logs = [], []

    def on_epoch(log):
        logs.append(log)
        if log.epoch == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(lite0, small_glyphs, CHEAP, cache=cache, on_epoch=on_epoch, on_interrupt=kept.append)
    (model,) = kept
    assert model.epochs_run == 2 and model.best_epoch == min(logs, key=lambda log: log.val_loss).epoch
    assert bool(model.tuned) == (model.best_epoch > 0)


def test_early_stopping_in_finetune_mode(lite0, small_glyphs, cache):
    config = dataclasses.replace(CHEAP, epochs=12, patience=2, lr=2.0)  # far too high: validation loss climbs
    trained = train(lite0, small_glyphs, config, cache=cache)
    assert trained.stopped_early and not trained.stopped_by_user
    assert trained.epochs_run == trained.best_epoch + 2 < 12
    assert trained.history[trained.best_epoch].val_loss == min(log.val_loss for log in trained.history)


ONE_CLASS = {"only": glyph_uploads(4, classes=1)["digit_0"]}
ONE_IMAGE = {"a": glyph_uploads(1, classes=1)["digit_0"], "b": glyph_uploads(4, classes=2)["digit_1"]}


@pytest.mark.parametrize(("uploads", "message"), [(ONE_CLASS, "only 1 class"), (ONE_IMAGE, "at least 2 images")])
def test_bad_datasets_get_a_clear_message_in_finetune_mode(lite0, uploads, message):
    with pytest.raises(ZooScopeError, match=message):
        train(lite0, dataset_from_uploads(uploads), CHEAP)


# --- estimates and the learning-rate finder ------------------------------------------------------


def test_time_estimates_are_measured_for_every_depth(lite0, small_glyphs, monkeypatch):
    costs = measure_costs(lite0, small_glyphs.items, CHEAP)
    assert list(costs) == list(DEPTHS)
    for cost in costs.values():
        assert cost.reason is None
        assert all(value > 0 for value in (cost.decode, cost.augment, cost.features, cost.prefix, cost.step))
        assert 0 < cost.forward < cost.step
        assert cost.scale == pytest.approx((224 / 96) ** 2)
    assert [costs[d].has_prefix for d in DEPTHS] == [True, True, True, False]
    assert costs["head"].trainable_params == 0 < costs["last"].trainable_params < costs["all"].trainable_params
    estimates = {d: estimate_seconds(costs[d], CHEAP, 240, 60) for d in DEPTHS}
    assert all(math.isfinite(seconds) and seconds > 0 for seconds in estimates.values())

    monkeypatch.setattr(depth_module, "TRAINING_MEMORY_BUDGET", 8 << 20)  # 0.5 M parameters
    refused = measure_costs(lite0, small_glyphs.items[:2], CHEAP)
    assert refused["head"].reason is None and "MB this app allows" in refused["last"].reason
    assert math.isnan(estimate_seconds(refused["last"], CHEAP, 240, 60))


def test_estimate_arithmetic():
    """The same steps as train(): features of uncached images, training images decoded once, the views through
    the prefix once (cached) or each epoch (not), validation through the tail at the model's resolution."""
    config = TrainConfig(mode="finetune", epochs=5, views=4)
    half = DepthCost(
        "half", 1, decode=0.004, augment=0.01, features=0.05, prefix=0.02, step=0.09, forward=0.03, scale=2.0,
        has_prefix=True,
    )  # fmt: skip
    validation = 20 * 0.03 * 2.0
    cached = estimate_seconds(half, config, 100, 20, uncached=120)
    fixed = 120 * (0.004 + 0.05) + 100 * 0.004 + 3 * 0.03
    assert cached == pytest.approx(
        fixed + 4 * 100 * (0.01 + 0.02) + 20 * (0.004 + 0.02 * 2.0) + 5 * (100 * 0.09 + validation)
    )
    whole = dataclasses.replace(half, depth="all", has_prefix=False)
    fresh = estimate_seconds(whole, config, 100, 20)
    per_epoch = 100 * (0.01 + 0.02 + 0.09) + 20 * (0.004 + 0.02 * 2.0) + validation
    assert fresh == pytest.approx(100 * 0.004 + 3 * 0.03 + 5 * per_epoch)
    assert estimate_seconds(half, config, 100, 40, uncached=120) > cached  # more validation images take longer
    assert math.isnan(estimate_seconds(dataclasses.replace(half, reason="too big"), config, 100, 20))


def test_lr_finder_sweeps_upwards_and_suggests_a_rate(lite0, small_glyphs, cache):
    finding = find_lr(lite0, small_glyphs, TrainConfig(), cache=cache)
    frame = finding.frame
    assert list(frame.columns) == ["lr", "loss"] and 10 <= len(frame) <= 100
    assert frame["lr"].is_monotonic_increasing and frame["lr"].iloc[0] == pytest.approx(1e-6)
    assert 1e-5 <= finding.suggestion <= 0.1
    assert finding.suggestion in set(frame["lr"])
    assert frame["loss"].iloc[0] > frame["loss"].min()  # the head learnt something along the way


def test_valley_is_fastais_rule():
    losses = [3.0, 3.0, 2.9, 2.5, 2.0, 1.5, 1.2, 1.1, 1.0, 1.2, 5.0]  # 8 falling values, index 0 to 8
    assert valley(losses) == 0 + 2 + 1  # from 0: a third of 8 (2), then half of that (1)
    assert valley([1.0]) == 0


# --- safety --------------------------------------------------------------------------------------

_writes: list[str] | None = None


def _watch_writes(event: str, args: tuple) -> None:
    if _writes is None or event != "open":
        return
    path, mode, flags = args
    writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
        isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
    )
    if writing and isinstance(path, str | bytes | Path):
        _writes.append(os.fsdecode(path))


def test_training_writes_nothing_outside_temporary_folders(lite0, small_glyphs, tmp_path, monkeypatch):
    global _writes
    monkeypatch.chdir(tmp_path)
    sys.addaudithook(_watch_writes)  # audit hooks cannot be removed: it records only while _writes is a list
    _writes = []
    try:
        trained = train(lite0, small_glyphs, dataclasses.replace(CHEAP, epochs=1))
        bundle = export_bundle(trained)
        import_bundle(bundle, lambda name: lite0)
        find_lr(lite0, small_glyphs, TrainConfig(), steps=10)
        (tmp_path / "model.zip").write_bytes(bundle)  # the one write: proof that the watch sees writes
        written = list(_writes)
    finally:
        _writes = None
    assert str(tmp_path / "model.zip") in written
    temporary = (str(tmp_path), tempfile.gettempdir())
    assert [path for path in written if not os.path.abspath(path).startswith(temporary)] == []
