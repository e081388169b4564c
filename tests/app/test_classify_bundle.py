"""Classify with a fine-tuned bundle: import it on the Classify page, get the same answers as the trainer."""

import numpy as np
import pytest

from core.finetune.bundle import export_bundle
from core.finetune.config import TrainConfig
from core.finetune.data import dataset_from_uploads
from core.finetune.train import train
from core.loading import load_model
from tests.app.conftest import shown
from tests.faces import lfw_pngs


@pytest.fixture(scope="module")
def faces():
    face, other = lfw_pngs()
    return list(face[:20]), list(other[:20])


@pytest.fixture(scope="module")
def trained(faces):
    face, other = faces
    dataset = dataset_from_uploads(
        {
            "face": [(f"f{i}.png", b) for i, b in enumerate(face[:16])],
            "other": [(f"o{i}.png", b) for i, b in enumerate(other[:16])],
        }
    )
    return train(load_model("efficientnet_lite0"), dataset, TrainConfig(epochs=10))


def test_bundle_upload_selects_my_model_and_matches_the_trainer(app, trained, faces):
    bundle = export_bundle(trained)
    app.file_uploader(key="classify_bundle").set_value(("my-faces.zip", bundle, "application/zip")).run()
    assert not app.exception, app.exception
    assert app.selectbox(key="classify_model").value == "my model"
    assert "face, other" in app.success[0].value

    probes = [("probe-face.png", faces[0][18]), ("probe-other.png", faces[1][18])]
    app.file_uploader(key="classify_files").set_value([(name, data, "image/png") for name, data in probes]).run()
    assert not app.exception, app.exception
    summary = next(e.value for e in app.dataframe if "top1" in e.value.columns)
    expected = trained.classify_files(load_model("efficientnet_lite0"), probes, k=2)
    assert list(summary["top1"]) == [r.top1.label for r in expected]
    assert np.allclose(summary["confidence"], [r.top1.probability for r in expected], atol=1e-6)


def test_tampered_bundle_is_refused_with_a_message(app):
    app.file_uploader(key="classify_bundle").set_value(
        ("broken.zip", b"PK\x03\x04 not really", "application/zip")
    ).run()
    assert not app.exception, app.exception
    assert "broken.zip" in shown(app.error[0].value)
    assert app.selectbox(key="classify_model").value == "efficientnet_lite0"
