"""core.finetune.bundle: a trained head goes out as JSON + safetensors and comes back identical;
anything else (pickles above all) is refused without being run. ONNX export matches PyTorch."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import random
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import safetensors.torch
import torch
from PIL import Image
from skimage import data as skdata

from core.datasets.labelled import dataset_from_uploads, stratified_split
from core.finetune.bundle import (
    FORMAT_VERSION,
    MANIFEST,
    MAX_MANIFEST_BYTES,
    WEIGHTS,
    BundleError,
    export_bundle,
    export_onnx,
    import_bundle,
)
from core.finetune.config import TrainConfig
from core.finetune.extraction import FeatureCache
from core.finetune.familiarity import MAX_REFERENCES, REFERENCES, VALIDATION
from core.finetune.threshold import fallback_threshold
from core.finetune.train import train
from core.finetune.trained import TrainedModel
from core.models.keys import ModelKey
from core.models.loading import load_model
from tests.faces import lfw_pngs
from tests.glyphs import glyph_uploads

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def small_faces():
    face, other = lfw_pngs()
    return dataset_from_uploads(
        {
            "face": [(f"face_{i}.png", data) for i, data in enumerate(face[:12])],
            "not_face": [(f"other_{i}.png", data) for i, data in enumerate(other[:12])],
        }
    )


@pytest.fixture(scope="module")
def fast_model(lite0, small_faces) -> TrainedModel:
    return train(lite0, small_faces, TrainConfig(mode="fast", head="mlp", epochs=10), cache=FeatureCache())


@pytest.fixture(scope="module")
def glyphs():
    return dataset_from_uploads(glyph_uploads(6, classes=3))


@pytest.fixture(scope="module")
def finetune_model(lite0, glyphs) -> TrainedModel:
    # The head alone for one epoch only: the epochs with the last block then lower the validation loss, so
    # the kept model is one with trained copies to store.
    config = TrainConfig(
        mode="finetune", unfreeze="last", epochs=2, head_epochs=1, batch_size=8, views=1, train_size=96
    )
    trained = train(lite0, glyphs, config)
    assert trained.best_epoch >= 1 and trained.tuned  # the kept model has trained copies to store
    return trained


@pytest.fixture(scope="module")
def images(small_faces) -> list[Image.Image]:
    faces = [Image.open(io.BytesIO(small_faces.items[i].data)) for i in (0, -1)]
    return [Image.fromarray(skdata.chelsea()), Image.fromarray(skdata.coffee()), *faces]


@pytest.fixture(scope="module")
def bundle(fast_model) -> bytes:
    return export_bundle(fast_model)


def members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def rezip(contents: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in contents.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def no_backbone(name: str):
    raise AssertionError(f"a fast-mode bundle needs no backbone, yet {name} was asked for")


# --- round trips ----------------------------------------------------------------------------------


def test_bundle_holds_exactly_json_and_safetensors(bundle, fast_model):
    contents = members(bundle)
    assert sorted(contents) == [MANIFEST, WEIGHTS]
    manifest = json.loads(contents[MANIFEST])
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["backbone"] == "efficientnet_lite0"
    assert manifest["weights_id"] == "EfficientNetLite0_Weights.IMAGENET1K"
    assert manifest["classes"] == ["face", "not_face"]
    assert manifest["preprocessing"] == {
        "resize": 256,
        "crop": 224,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "interpolation": "bicubic",
    }
    assert manifest["head"] == {"type": "mlp", "in_features": 1280, "hidden": 256, "num_classes": 2}
    assert manifest["tuned"] == []
    assert manifest["training"]["mode"] == "fast" and manifest["training"]["epochs"] == 10
    assert manifest["metrics"] == {"val_accuracy": fast_model.val_accuracy, "epochs_run": fast_model.epochs_run}
    assert manifest["created"].endswith("+00:00")
    tensors = safetensors.torch.load(contents[WEIGHTS])
    heads = ["head.0.bias", "head.0.weight", "head.3.bias", "head.3.weight"]
    assert sorted(tensors) == ["familiarity.references", "familiarity.validation", *heads]


def test_fast_bundle_round_trip_predicts_identically(bundle, fast_model, lite0, images):
    imported = import_bundle(bundle, no_backbone)
    assert imported.classes == fast_model.classes and imported.tuned == {}
    assert imported.config == fast_model.config and imported.epochs_run == fast_model.epochs_run
    fresh = load_model("efficientnet_lite0")  # a new process would load its own copy
    expected = fast_model.predict(images, lite0)
    assert torch.allclose(imported.predict(images, fresh), expected, atol=1e-6, rtol=0)


def test_finetune_bundle_round_trip_predicts_identically(finetune_model, lite0, images):
    data = export_bundle(finetune_model)
    manifest = json.loads(members(data)[MANIFEST])
    assert manifest["tuned"] == ["blocks.6", "conv_head", "bn2"] and manifest["training"]["unfreeze"] == "last"
    tensors = safetensors.torch.load(members(data)[WEIGHTS])
    assert {name.split(".")[1] for name in tensors if name.startswith("backbone.")} == {"blocks", "conv_head", "bn2"}
    assert "backbone.bn2.running_var" in tensors and "head.weight" in tensors
    asked = []
    fresh = load_model("efficientnet_lite0")
    imported = import_bundle(data, lambda key: asked.append(key) or fresh)
    assert asked == [ModelKey("efficientnet_lite0")] and list(imported.tuned) == list(finetune_model.tuned)
    for path, module in finetune_model.tuned.items():
        for name, tensor in module.state_dict().items():
            assert torch.equal(imported.tuned[path].state_dict()[name], tensor), f"{path}.{name}"
    expected = finetune_model.predict(images, lite0)
    assert torch.allclose(imported.predict(images, fresh), expected, atol=1e-6, rtol=0)


def test_finetune_bundle_must_hold_exactly_the_modules_its_depth_trains(finetune_model):
    data = export_bundle(finetune_model)
    refused_with = "trained modules do not fit efficientnet_lite0 trained to depth 'last'"
    with pytest.raises(BundleError, match=refused_with):
        import_bundle(with_manifest(data, tuned=["blocks.6", "conv_head"]), no_backbone)
    with pytest.raises(BundleError, match=refused_with):
        import_bundle(with_manifest(data, tuned=["conv_stem", "blocks.6", "conv_head", "bn2"]), no_backbone)
    training = json.loads(members(data)[MANIFEST])["training"] | {"unfreeze": "all"}
    with pytest.raises(BundleError, match="depth 'all'"):
        import_bundle(with_manifest(data, training=training), no_backbone)
    with pytest.raises(BundleError, match="must be a list of module paths"):
        import_bundle(with_manifest(data, tuned="blocks.6"), no_backbone)


def test_version_1_bundles_still_import(finetune_model, lite0, images):
    """Version 1 stored the last block as "block.*" under "block": the same model must come back."""
    contents = members(export_bundle(finetune_model))
    manifest = json.loads(contents[MANIFEST])
    manifest = {k: v for k, v in manifest.items() if k not in ("tuned", "familiarity")}
    manifest |= {"format_version": 1, "block": "blocks.-1"}
    del manifest["training"]["unfreeze"]
    tensors = safetensors.torch.load(contents[WEIGHTS])
    # The old layout: blocks.6 alone (its conv_head and bn2 copies did not exist then).
    old = {k: v for k, v in tensors.items() if k.startswith("head.")}
    block = "backbone.blocks.6."
    old |= {k.replace(block, "block."): v for k, v in tensors.items() if k.startswith(block)}
    data = rezip({MANIFEST: json.dumps(manifest).encode(), WEIGHTS: safetensors.torch.save(old)})
    imported = import_bundle(data, lambda name: lite0)
    assert list(imported.tuned) == ["blocks.-1"] and imported.config.unfreeze == "last"
    for name, tensor in finetune_model.tuned["blocks.6"].state_dict().items():
        assert torch.equal(imported.tuned["blocks.-1"].state_dict()[name], tensor), name
    assert imported.predict(images, lite0).shape == (len(images), 3)


# --- what the model remembers of its training images (core.finetune.familiarity) ------------------


def test_familiarity_survives_the_round_trip(bundle, fast_model, lite0, images):
    familiar = fast_model.familiarity
    manifest = json.loads(members(bundle)[MANIFEST])
    assert manifest["familiarity"] == {
        "measure": "cosine_1nn",
        "min_similarity": familiar.min_similarity,
        "references": 20,  # the training images (24 less 4 held back)
        "validation": 4,
    }
    imported = import_bundle(bundle, no_backbone)
    assert torch.equal(imported.familiarity.references, familiar.references)
    assert torch.equal(imported.familiarity.validation, familiar.validation)
    files = [(f"{i}.png", _png(image)) for i, image in enumerate(images[::2])]  # a cat, a face
    before, after = fast_model.classify_files(lite0, files), imported.classify_files(lite0, files)
    assert [r.similarity for r in after] == pytest.approx([r.similarity for r in before], abs=1e-6)
    assert [r.not_sure_why for r in after] == [r.not_sure_why for r in before]
    assert after[0].not_sure_why == "unlike_training"  # a cat, for a model of faces

    familiar.min_similarity, chosen = 0.0, familiar.min_similarity  # moved on the page, then exported
    try:
        assert import_bundle(export_bundle(fast_model), no_backbone).familiarity.min_similarity == 0.0
    finally:
        familiar.min_similarity = chosen


def test_trained_copies_are_remembered_through_the_features_the_head_sees(finetune_model, lite0, glyphs):
    """Finetune mode: the training images' features come from the trained copies, as when it classifies."""
    config = finetune_model.config
    train_items, val_items = stratified_split(glyphs.items, val_fraction=config.val_fraction, seed=config.seed)
    files = [(item.name, item.data) for item in (*train_items[:2], val_items[0])]
    similarities = [r.similarity for r in finetune_model.classify_files(lite0, files)]
    assert similarities[0] > 0.999 and similarities[1] > 0.999  # each training image finds itself
    assert similarities[2] < 0.999  # a validation image was never kept


def test_a_bundle_made_before_familiarity_loads_with_the_confidence_test_alone(bundle, lite0, images):
    contents = members(bundle)
    manifest = json.loads(contents[MANIFEST])
    del manifest["familiarity"]
    tensors = {k: v for k, v in safetensors.torch.load(contents[WEIGHTS]).items() if not k.startswith("familiarity.")}
    old = rezip({MANIFEST: json.dumps(manifest).encode(), WEIGHTS: safetensors.torch.save(tensors)})
    imported = import_bundle(old, no_backbone)
    assert imported.familiarity is None
    results = imported.classify_files(lite0, [(f"{i}.png", _png(image)) for i, image in enumerate(images[::2])])
    assert all(r.similarity is None and r.not_sure_why in (None, "low_confidence") for r in results)
    assert "familiarity" not in json.loads(members(export_bundle(imported))[MANIFEST])


def test_bad_familiarity_is_refused(bundle):
    contents = members(bundle)
    entry = json.loads(contents[MANIFEST])["familiarity"]
    tensors = safetensors.torch.load(contents[WEIGHTS])

    def weights_with(changed: dict[str, torch.Tensor]) -> bytes:
        return rezip(contents | {WEIGHTS: safetensors.torch.save(changed)})

    refused(with_manifest(bundle, familiarity=entry | {"measure": "mahalanobis"}), "measure 'cosine_1nn'")
    refused(with_manifest(bundle, familiarity=entry | {"min_similarity": 1.5}), "minimum similarity must be")
    refused(with_manifest(bundle, familiarity=entry | {"references": MAX_REFERENCES + 1}), "references must be")
    refused(with_manifest(bundle, familiarity=None), "familiarity must be")
    refused(with_manifest(bundle, familiarity=entry | {"references": 18}), r"\(20, 1280\).*\(18, 1280\)")
    refused(weights_with(tensors | {REFERENCES: tensors[REFERENCES].float()}), "torch.float32")
    refused(weights_with(tensors | {REFERENCES: tensors[REFERENCES] * 2}), "rows of unit length")
    refused(weights_with(tensors | {VALIDATION: tensors[VALIDATION] + 5}), "similarities from -1 to 1")
    manifest = json.loads(contents[MANIFEST])
    del manifest["familiarity"]  # tensors without the entry that describes them
    refused(rezip(contents | {MANIFEST: json.dumps(manifest).encode()}), "no place for: familiarity")


# --- refusals -------------------------------------------------------------------------------------


class _CreatesMarker:
    """Unpickling this calls Path.touch(marker): proof that a pickle ran, should it ever be loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def marker(tmp_path: Path):
    path = tmp_path / "pickle-ran"
    pickle.loads(pickle.dumps(_CreatesMarker(path)))  # the payload works...
    assert path.exists()
    path.unlink()
    yield path
    assert not path.exists(), "a pickle from the bundle was executed"  # ...and the import never ran it


def evil_pickle(marker: Path) -> bytes:
    return pickle.dumps(_CreatesMarker(marker), protocol=4)


def with_manifest(bundle: bytes, **changes) -> bytes:
    contents = members(bundle)
    manifest = json.loads(contents[MANIFEST])
    manifest.update(changes)
    contents[MANIFEST] = json.dumps(manifest).encode()
    return rezip(contents)


def refused(data: bytes, match: str) -> None:
    with pytest.raises(BundleError, match=match):
        import_bundle(data, no_backbone)


def test_the_not_sure_threshold_survives_the_round_trip(fast_model, lite0, images):
    data = export_bundle(fast_model)
    assert json.loads(members(data)[MANIFEST])["threshold"] == fast_model.threshold
    assert import_bundle(data, no_backbone).threshold == fast_model.threshold

    fast_model.threshold, chosen = 0.97, fast_model.threshold  # moved on the page, then exported
    try:
        imported = import_bundle(export_bundle(fast_model), no_backbone)
    finally:
        fast_model.threshold = chosen
    assert imported.threshold == 0.97
    files = [("chelsea.png", _png(images[0]))]
    assert imported.classify_files(lite0, files)[0].threshold == 0.97


def test_a_bundle_without_a_threshold_imports_with_the_fallback(bundle):
    contents = members(bundle)
    manifest = json.loads(contents[MANIFEST])
    del manifest["threshold"]  # as bundles made before the threshold was stored
    imported = import_bundle(rezip(contents | {MANIFEST: json.dumps(manifest).encode()}), no_backbone)
    assert imported.threshold == fallback_threshold(2) == 0.75


@pytest.mark.parametrize("value", [1.5, -0.2, "high", True, None])
def test_a_bad_threshold_is_refused(bundle, value):
    refused(with_manifest(bundle, threshold=value), "threshold must")


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_random_bytes_and_empty_files_are_refused(marker):
    refused(random.Random(0).randbytes(4096), "not a zip archive")
    refused(b"", "empty")
    refused(evil_pickle(marker), "is a Python pickle.*never loaded")


def test_corrupt_zip_is_refused(bundle, marker):
    refused(bundle[: len(bundle) // 2], "not a zip archive")  # truncated: no central directory
    damaged = bytearray(bundle)
    offset = bundle.index(b"safetensors") + 200  # inside the stored weights: the CRC no longer matches
    damaged[offset] ^= 0xFF
    refused(bytes(damaged), "corrupt")


def test_extra_pickle_member_is_refused_and_never_run(bundle, marker):
    contents = members(bundle) | {"evil.pkl": evil_pickle(marker)}
    refused(rezip(contents), "'evil.pkl', a Python pickle; pickles can run code and are never loaded")


def test_extra_member_with_pickle_bytes_under_another_name_is_refused(bundle, marker):
    contents = members(bundle) | {"readme.txt": evil_pickle(marker)}
    refused(rezip(contents), "'readme.txt', a Python pickle.*never loaded")
    refused(rezip(members(bundle) | {"notes.txt": b"hello"}), "'notes.txt', which is not part of a ZooScope bundle")


def test_pickled_weights_are_refused(bundle, marker, lite0):
    contents = members(bundle)
    refused(rezip(contents | {WEIGHTS: evil_pickle(marker)}), "weights.safetensors is a Python pickle.*never loaded")
    checkpoint = io.BytesIO()
    torch.save({"head.weight": torch.zeros(2, 1280)}, checkpoint)  # torch.save: a zip around a pickle
    refused(rezip(contents | {WEIGHTS: checkpoint.getvalue()}), "PyTorch checkpoint.*never loaded")


def test_missing_members_are_refused(bundle):
    contents = members(bundle)
    refused(rezip({WEIGHTS: contents[WEIGHTS]}), "has no manifest.json")
    refused(rezip({MANIFEST: contents[MANIFEST]}), "has no weights.safetensors")


def test_bad_manifests_are_refused(bundle):
    contents = members(bundle)
    refused(rezip(contents | {MANIFEST: b"{not json"}), "not valid JSON")
    refused(rezip(contents | {MANIFEST: b"[1, 2]"}), "not a JSON object")
    refused(with_manifest(bundle, format_version=3), "format version 3.*reads versions 1 and 2")
    refused(with_manifest(bundle, backbone="resnet9000"), "'resnet9000', a model this app does not know")
    refused(with_manifest(bundle, weights_id="Other.IMAGENET1K_V9"), "weights")
    refused(with_manifest(bundle, classes=["face", "face"]), "classes")
    refused(with_manifest(bundle, head={"type": "mlp", "in_features": 1280, "hidden": 256, "num_classes": 3}), "head")
    refused(with_manifest(bundle, training={"mode": "warp"}), "training settings are invalid")
    manifest = json.loads(contents[MANIFEST])
    del manifest["classes"]
    refused(rezip(contents | {MANIFEST: json.dumps(manifest).encode()}), "lacks classes")
    padded = json.dumps(json.loads(contents[MANIFEST]) | {"padding": "x" * MAX_MANIFEST_BYTES}).encode()
    refused(rezip(contents | {MANIFEST: padded}), "limit")


def test_corrupt_safetensors_is_refused(bundle):
    contents = members(bundle)
    refused(rezip(contents | {WEIGHTS: (10**9).to_bytes(8, "little") + b"{}"}), "header is corrupt")
    garbage_header = b'{"head.0.weight": {"dtype": "F32"'
    refused(rezip(contents | {WEIGHTS: len(garbage_header).to_bytes(8, "little") + garbage_header}), "corrupt")


def test_mismatched_tensors_are_refused(bundle):
    contents = members(bundle)
    tensors = safetensors.torch.load(contents[WEIGHTS])

    def weights_with(changed: dict[str, torch.Tensor]) -> bytes:
        return rezip(contents | {WEIGHTS: safetensors.torch.save(changed)})

    refused(weights_with(tensors | {"head.3.weight": torch.zeros(3, 256)}), r"head.3.weight.*\(3, 256\).*\(2, 256\)")
    refused(weights_with(tensors | {"head.0.weight": tensors["head.0.weight"].double()}), "torch.float64")
    refused(weights_with(tensors | {"backbone.blocks.6.extra": torch.zeros(1)}), "no place for: backbone.blocks.6")
    refused(weights_with({k: v for k, v in tensors.items() if k != "head.0.bias"}), "lacks tensors.*head.0.bias")
    nan = tensors["head.3.bias"].clone()
    nan[0] = float("nan")
    refused(weights_with(tensors | {"head.3.bias": nan}), "NaN")
    refused(
        with_manifest(bundle, head={"type": "linear", "in_features": 1280, "hidden": None, "num_classes": 2}), "lacks"
    )


# --- ONNX -----------------------------------------------------------------------------------------


def hashes(module: torch.nn.Module) -> list[str]:
    tensors = [*module.parameters(), *module.buffers()]
    return [hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest() for t in tensors]


def test_onnx_export_matches_pytorch(finetune_model, lite0, images):
    before = hashes(lite0.module)
    model = export_onnx(finetune_model, lite0)
    assert hashes(lite0.module) == before
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    assert json.loads(session.get_modelmeta().custom_metadata_map["classes"]) == ["digit_0", "digit_1", "digit_2"]
    batch = torch.stack([lite0.preprocess(image.convert("RGB")) for image in images[:2]])  # the two photos
    with torch.inference_mode():
        expected = finetune_model.full_module(lite0)(batch).numpy()
    (logits,) = session.run(["logits"], {"image": batch.numpy()})
    assert logits.shape == (2, 3)
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)
    (single,) = session.run(["logits"], {"image": batch[:1].numpy()})  # dynamic batch axis
    np.testing.assert_allclose(single, expected[:1], atol=1e-4, rtol=0)
