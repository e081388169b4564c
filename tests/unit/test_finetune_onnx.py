"""Fine-tuning with ONNX Runtime: fast mode's features from the exported backbone, and a trained model's
ONNX files (fp32 and int8) with their agreement measured."""

from __future__ import annotations

import copy
import io

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from PIL import Image

from core.datasets.check_images import check_images
from core.datasets.labelled import dataset_from_uploads, stratified_split
from core.engines.choice import load_handle
from core.engines.handle import ModelHandle
from core.engines.onnx_export import check_batches
from core.engines.sessions import SessionForward
from core.features.backbone import backbone_view, frozen_features
from core.finetune.config import TrainConfig
from core.finetune.deploy import deploy_images, describe, export_onnx_models
from core.finetune.depth import cut_for
from core.finetune.extraction import FeatureCache, decode_item, extract_features
from core.finetune.train import train
from core.models.keys import ModelKey
from core.preprocessing import model_batch
from tests.faces import lfw_pngs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def faces():
    face, other = lfw_pngs()
    return dataset_from_uploads(
        {
            "face": [(f"face_{i}.png", data) for i, data in enumerate(face[:15])],
            "not_face": [(f"other_{i}.png", data) for i, data in enumerate(other[:15])],
        }
    )


@pytest.fixture(scope="module")
def backbone() -> ModelHandle:
    model = load_handle(ModelKey("efficientnet_lite0"), runtime_choice="onnx")
    assert model.runtime == "onnx", model.note
    return model


def test_fast_mode_features_come_from_onnx_runtime_within_1e4_of_pytorchs(backbone, faces):
    view = backbone_view(backbone.torch)
    extractor = frozen_features(backbone.torch, view, runtime=backbone.runtime)
    assert isinstance(extractor, SessionForward)  # not the PyTorch view
    for images in (check_images()[:8], [decode_item(item) for item in faces.items[:8]]):
        batch = model_batch(images, backbone.preprocess)
        with torch.inference_mode():
            expected = view.module(batch)
        found = extractor(batch)
        assert found.shape == expected.shape == (8, 1280)
        assert float((found - expected).abs().max()) <= 1e-4


def test_pytorch_models_and_trained_blocks_keep_the_pytorch_view(backbone):
    torch_view = backbone_view(backbone.torch)
    assert frozen_features(backbone.torch, torch_view) is torch_view.module
    block = cut_for("efficientnet_lite0", "last").tuned[0]
    own_copy = copy.deepcopy(backbone.torch.module.get_submodule(block))
    with_block = backbone_view(backbone.torch, tuned={block: own_copy})
    # Its block is the person's own.
    assert frozen_features(backbone.torch, with_block, runtime=backbone.runtime) is with_block.module


def test_training_on_onnx_features_learns_what_pytorch_features_teach(backbone, faces):
    config = TrainConfig(mode="fast", epochs=8)
    on_onnx = train(backbone.torch, faces, config, cache=FeatureCache(), runtime=backbone.runtime)
    on_torch = train(backbone.torch, faces, config, cache=FeatureCache())
    assert on_onnx.val_accuracy == on_torch.val_accuracy >= 0.8
    for ours, theirs in zip(on_onnx.head.parameters(), on_torch.head.parameters(), strict=True):
        assert torch.allclose(ours, theirs, atol=1e-3)


def test_the_extraction_runs_the_onnx_session(backbone, faces, monkeypatch):
    calls = []
    real = SessionForward.__call__
    monkeypatch.setattr(SessionForward, "__call__", lambda self, batch: calls.append(len(batch)) or real(self, batch))
    view = backbone_view(backbone.torch)
    features = frozen_features(backbone.torch, view, runtime=backbone.runtime)
    extract_features(features, backbone.preprocess, faces.items, batch_size=16)
    assert sum(calls) == len(faces.items)


def test_my_model_classifies_through_the_onnx_features_too(trained, backbone, faces, monkeypatch):
    images = [decode_item(item) for item in faces.items[:6]]
    expected = trained.predict(images, backbone.torch)  # all PyTorch
    calls = []
    real = SessionForward.__call__
    monkeypatch.setattr(SessionForward, "__call__", lambda self, batch: calls.append(len(batch)) or real(self, batch))
    found = trained.predict(images, backbone.torch, runtime=backbone.runtime)
    assert calls == [6]  # the backbone ran in ONNX Runtime, the head in PyTorch
    assert torch.allclose(found, expected, atol=1e-4)


# --- a trained model as ONNX files ------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(backbone, faces):
    config = TrainConfig(mode="fast", epochs=8)
    return train(backbone.torch, faces, config, cache=FeatureCache(), runtime=backbone.runtime)


@pytest.fixture(scope="module")
def exports(trained, backbone, faces):
    return export_onnx_models(trained, backbone.torch, deploy_images(trained, faces))


def session_of(data: bytes) -> SessionForward:
    return SessionForward(onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"]))


def test_the_images_are_the_persons_own(trained, faces):
    images = deploy_images(trained, faces)
    train_items, val_items = stratified_split(faces.items, val_fraction=0.2, seed=trained.config.seed)
    assert len(images.calibration) == len(train_items) and len(images.check) == len(val_items)
    assert images.source == f"your {len(val_items)} validation images"
    other = deploy_images(trained, None)  # an imported bundle: no dataset in the session
    assert len(other.check) == len(check_images()) and "check photos" in other.source


def test_fp32_and_int8_exports_report_their_agreement_as_measured(exports, trained, backbone, faces):
    fp32, int8 = exports
    assert (fp32.kind, fp32.reference, int8.kind, int8.reference) == ("fp32", "PyTorch", "int8", "fp32")
    val_images = deploy_images(trained, faces).check
    batch = torch.cat(check_batches(val_images, backbone.preprocess))
    with torch.inference_mode():
        pytorch = trained.full_module(backbone.torch)(batch).softmax(dim=1)
    fp32_probs = session_of(fp32.data)(batch).softmax(dim=1)
    int8_probs = session_of(int8.data)(batch).softmax(dim=1)
    assert fp32.images == int8.images == len(val_images)
    assert fp32.same_top1 == int((pytorch.argmax(1) == fp32_probs.argmax(1)).sum()) == len(val_images)
    assert fp32.max_difference == pytest.approx(float((pytorch - fp32_probs).abs().max()), abs=1e-6)
    assert fp32.max_difference <= 1e-4
    assert int8.same_top1 == int((fp32_probs.argmax(1) == int8_probs.argmax(1)).sum())
    assert int8.max_difference == pytest.approx(float((fp32_probs - int8_probs).abs().max()), abs=1e-5)
    assert int8.ms > 0 and int8.reference_ms > 0 and int8.calibration_images == 24
    assert int8.size_mb < fp32.size_mb / 3
    assert f"{int8.same_top1} of {int8.images}" in describe(int8) and "calibrated on 24 images" in describe(int8)


def test_each_file_carries_the_classes_and_preprocessing(exports):
    for export in exports:
        model = onnx.load_from_string(export.data)
        metadata = {prop.key: prop.value for prop in model.metadata_props}
        assert metadata["classes"] == '["face", "not_face"]' and "preprocessing" in metadata
        assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def test_a_bundle_exported_photo_classifies_the_same(exports, trained, backbone, faces):
    image = Image.open(io.BytesIO(faces.items[0].data)).convert("RGB")
    batch = model_batch([image], backbone.preprocess)
    expected = trained.predict([image], backbone.torch, runtime=backbone.runtime).numpy()
    found = session_of(exports[0].data)(batch).softmax(dim=1).numpy()
    np.testing.assert_allclose(found, expected, atol=1e-4)
