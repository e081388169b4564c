"""Classify with a fine-tuned bundle: import it on the Classify page, get the same answers as the trainer,
and "not sure" when a photo is unlike its training images or below its confidence threshold."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from core.datasets.labelled import dataset_from_uploads
from core.finetune.bundle import export_bundle
from core.finetune.config import TrainConfig
from core.finetune.examples import example_dataset
from core.finetune.familiarity import NOT_SURE_UNLIKE
from core.finetune.threshold import NOT_SURE
from core.finetune.train import train
from core.models.loading import load_model
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


EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"


@pytest.fixture(scope="module")
def textures():
    """A model of the example dataset (brick, grass, gravel), as a person trains it in the first minute."""
    return train(load_model("efficientnet_lite0"), example_dataset(), TrainConfig())


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def test_my_model_says_not_sure_for_a_photo_unlike_its_training_images_or_below_its_threshold(app, textures):
    bundle = export_bundle(textures)
    app.file_uploader(key="classify_bundle").set_value(("textures.zip", bundle, "application/zip")).run()
    assert not app.exception, app.exception
    assert app.selectbox(key="classify_model").value == "my model"
    slider = app.slider(key="classify_threshold")
    assert slider.value == round(textures.threshold * 100) and "validation" in slider.help
    minimum = textures.familiarity.min_similarity
    slider = app.slider(key="classify_min_similarity")
    assert slider.value == minimum and "validation" in slider.help

    probes = [
        ("chelsea.jpg", (EXAMPLES / "chelsea.jpg").read_bytes()),  # a cat: none of the classes
        ("grass.png", png(skdata.grass()[300:420, 40:160])),  # grass off the example's grid
    ]
    app.file_uploader(key="classify_files").set_value([(n, d, "image/png") for n, d in probes]).run()
    assert not app.exception, app.exception
    summary = next(e.value for e in app.dataframe if "answer" in e.value.columns)
    assert list(summary["answer"]) == [NOT_SURE_UNLIKE, "grass"]
    assert list(summary["top1"]) == ["grass", "grass"]  # the best guess stays in the table
    cards = [m.value for m in app.markdown if m.value.startswith("**")]
    assert cards[0].startswith("**Not sure: unlike the images it was trained on** · best guess grass at ")
    assert f"below the {minimum:.2f} minimum" in cards[0]
    assert cards[1].startswith("**grass** · ")

    # The similarity test off: the cat is still not sure, now by its confidence, below the model's threshold.
    app.slider(key="classify_min_similarity").set_value(0.0).run()
    assert not app.exception, app.exception
    summary = next(e.value for e in app.dataframe if "answer" in e.value.columns)
    assert list(summary["answer"]) == [NOT_SURE, "grass"]
    cards = [m.value for m in app.markdown if m.value.startswith("**")]
    assert cards[0].startswith("**Not sure: low confidence** · best guess grass at ")
    assert f"below the {textures.threshold:.0%} threshold" in cards[0]
    assert app.session_state["my_model"].familiarity.min_similarity == 0.0

    # A lower threshold on the page: the same results, judged again; the model keeps the new value.
    app.slider(key="classify_threshold").set_value(0).run()
    assert not app.exception, app.exception
    summary = next(e.value for e in app.dataframe if "answer" in e.value.columns)
    assert list(summary["answer"]) == ["grass", "grass"]
    assert app.session_state["my_model"].threshold == 0.0


def test_catalogue_models_have_no_threshold(app):
    coffee = ("coffee.jpg", (EXAMPLES / "coffee.jpg").read_bytes(), "image/jpeg")
    app.file_uploader(key="classify_files").set_value([coffee]).run()
    assert not app.exception, app.exception
    assert "classify_threshold" not in [s.key for s in app.slider]
    assert not any(m.value.startswith("**Not sure") for m in app.markdown)
