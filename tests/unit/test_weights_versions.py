"""Weights versions: a model's published ImageNet weights (resnet50's IMAGENET1K_V1 and V2) chosen by name,
kept apart everywhere a model is keyed, from torchvision's metadata only (no download)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from core.errors import UnknownWeights, ZooScopeError
from core.finetune import bundle
from core.finetune.bundle import BundleError, manifest_for
from core.finetune.config import TrainConfig
from core.finetune.trained import TrainedModel
from core.models.building import build_on_meta
from core.models.catalog import get_spec, spec_for_weights_id, weights_versions
from core.models.keys import ModelKey
from core.models.loading import LoadedModel
from core.models.versions import version_rows
from tests.cli import run

V1, V2 = "IMAGENET1K_V1", "IMAGENET1K_V2"


def test_resnet50_lists_both_versions_with_their_own_published_numbers():
    versions = {spec.version: spec for spec in weights_versions("resnet50")}
    assert list(versions) == [V1, V2]
    assert versions[V2] is get_spec("resnet50") and versions[V2].default_weights and not versions[V1].default_weights
    assert versions[V1].acc1 == pytest.approx(76.13) and versions[V2].acc1 == pytest.approx(80.858)
    assert versions[V1].file_name != versions[V2].file_name  # two files, two downloads
    assert versions[V1].recipe != versions[V2].recipe and versions[V1].recipe.startswith("https://")
    # V1 is the classic recipe: resize 256; V2's is 232 (its weights' own transforms, not the default's)
    assert versions[V1].transforms().resize_size == [256] and versions[V2].transforms().resize_size == [232]
    rows = version_rows(["resnet50", "efficientnet_lite0"])
    assert [(row["weights"], row["default"]) for row in rows] == [(V1, False), (V2, True)]


def test_one_version_models_and_entries_that_are_no_classifier():
    assert [spec.version for spec in weights_versions("efficientnet_lite0")] == ["IMAGENET1K"]
    # vgg16's IMAGENET1K_FEATURES has no classes and no accuracy: not offered
    assert [spec.version for spec in weights_versions("vgg16")] == [V1]


def test_a_version_brings_its_own_input_size_and_build():
    swag = get_spec("vit_b_16", "IMAGENET1K_SWAG_E2E_V1")
    assert swag.input_size == 384 and get_spec("vit_b_16").input_size == 224
    model = build_on_meta(swag)  # built for 384 px, as torchvision's builder would with these weights
    assert model.image_size == 384


def test_default_unknown_and_explicit_names():
    assert get_spec("resnet50", None) is get_spec("resnet50", "DEFAULT") is get_spec("resnet50", V2)
    v1 = get_spec("resnet50", V1)
    assert v1.weights_id == "ResNet50_Weights.IMAGENET1K_V1" != get_spec("resnet50").weights_id
    with pytest.raises(UnknownWeights, match=f"choose one of: {V1}, {V2}"):
        get_spec("resnet50", "IMAGENET1K_V9")
    assert spec_for_weights_id("resnet50", v1.weights_id) is v1
    assert spec_for_weights_id("resnet50", "Other.V9") is None and spec_for_weights_id("nope", "x") is None


def test_keys_labels_and_slugs_keep_versions_apart():
    default, v1, int8 = ModelKey("resnet50"), ModelKey("resnet50", weights=V1), ModelKey("resnet50", "int8", V1)
    assert ModelKey("resnet50", weights=V2) == default and default.weights is None  # the default named outright
    assert len({default, v1, int8}) == 3
    assert (default.label, v1.label, int8.label) == (
        "resnet50",
        "resnet50 · IMAGENET1K_V1",
        "resnet50 · IMAGENET1K_V1 · int8",
    )
    assert (default.slug, v1.slug) == ("resnet50", "resnet50-IMAGENET1K_V1")
    assert get_spec("resnet50", V1).slug == v1.slug and get_spec("resnet50").slug == "resnet50"
    with pytest.raises(UnknownWeights):
        ModelKey("efficientnet_lite0", weights=V1)


def test_the_pool_loads_each_version_once_under_its_own_key(monkeypatch):
    from core.engines.pool import ModelPool, file_size_estimate_mb

    loaded = []

    class Model:
        memory_mb = 1.0

    def loader(key, device, *, progress=None):
        loaded.append(key)
        return Model()

    pool = ModelPool(loader=loader, budget_mb=100)
    default, v1 = ModelKey("resnet50"), ModelKey("resnet50", weights=V1)
    first, second = pool.get(default), pool.get(v1)
    assert first is not second and pool.get(v1) is second and loaded == [default, v1]
    assert file_size_estimate_mb(v1) == pytest.approx(get_spec("resnet50", V1).file_size_mb)


def test_load_model_takes_the_versions_file_and_preprocessing(monkeypatch):
    from core.models import loading

    files = []
    monkeypatch.setattr(loading.weights, "resolve", lambda spec, progress=None: files.append(spec.file_name))
    monkeypatch.setattr(loading, "read_state_dict", lambda path: {})
    monkeypatch.setattr(loading, "build_model", lambda spec, state_dict: nn.Identity())
    model = loading.load_model("resnet50", weights=V1)
    assert model.spec.version == V1 and files == ["resnet50-0676ba61.pth"]
    assert model.preprocess.resize_size == [256]


def trained_on(weights_id: str) -> TrainedModel:
    return TrainedModel(
        backbone="resnet50",
        weights_id=weights_id,
        classes=["a", "b"],
        config=TrainConfig(),
        head=nn.Linear(2048, 2),
        threshold=0.5,
    )


def test_a_bundle_records_its_version_and_is_read_back_on_it():
    trained = trained_on(get_spec("resnet50", V1).weights_id)
    assert trained.backbone_key == ModelKey("resnet50", weights=V1)
    manifest = manifest_for(trained)
    assert manifest["weights_id"] == "ResNet50_Weights.IMAGENET1K_V1"
    assert manifest["preprocessing"]["resize"] == 256  # V1's own, not the default's 232
    spec, _, _ = bundle._check_manifest(manifest)
    assert spec is get_spec("resnet50", V1)
    with pytest.raises(BundleError, match="IMAGENET1K_V2"):  # names what this app has
        bundle._check_manifest({**manifest, "weights_id": "ResNet50_Weights.IMAGENET1K_V9"})


def test_a_model_trained_on_one_version_refuses_the_other():
    trained = trained_on(get_spec("resnet50", V1).weights_id)
    other = LoadedModel(
        spec=get_spec("resnet50"), module=nn.Identity(), preprocess=nn.Identity(), device=torch.device("cpu")
    )
    with pytest.raises(ZooScopeError, match="IMAGENET1K_V1"):
        trained.full_module(other)


@pytest.mark.parametrize(
    "command",
    [
        ["classify", "photo.jpg", "--model", "resnet50", "--weights", "IMAGENET1K_V9"],
        ["compare", "photo.jpg", "--models", "resnet50,vgg16", "--weights", V2],
        ["finetune", "data.zip", "--backbone", "resnet50", "--weights", "V9"],
    ],
)
def test_a_bad_weights_name_is_a_one_line_error(capsys, command):
    code, out, err = run(capsys, *command)
    assert code == 2 and not out
    assert len(err.strip().splitlines()) == 1 and "has no weights called" in err and "choose one of" in err
