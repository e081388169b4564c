"""The Fine-tune page through AppTest: real faces / non-faces from skimage, the bundled EfficientNet-Lite0, offline.

The page file runs on its own (AppTest.from_file), so these tests do not depend on app.py's navigation;
the last one goes through app.py to follow "Use it on the Classify page" once the page is registered there.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image
from skimage import data as skdata
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.runtime.scriptrunner_utils.exceptions import StopException
from streamlit.testing.v1 import AppTest

from core.finetune.bundle import export_bundle, import_bundle
from core.finetune.threshold import passing_share
from core.finetune.trained import TrainedModel
from core.models.loading import load_model
from tests.app.conftest import chart_key, ok, select_on_chart, shown
from tests.faces import lfw_pngs, zip_of
from tests.glyphs import glyph_pngs
from ui.charts import CELL_SELECTION
from ui.finetune.results import ALL_MISTAKES
from ui.navigation import CLASSIFY, FINETUNE, PAGES

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "assets" / "examples"
PAGE = str(ROOT / FINETUNE.file)
TIMEOUT = 180  # seconds per script run: a training run on a 2-core machine, with the first imports
PER_CLASS = 30


@pytest.fixture(scope="module")
def faces() -> dict[str, list[bytes]]:
    face, other = lfw_pngs()
    return {"face": list(face), "other": list(other)}


@pytest.fixture(scope="module")
def faces_zip(faces) -> bytes:
    return zip_of({label: images[:PER_CLASS] for label, images in faces.items()})


pytestmark = pytest.mark.usefixtures("offline", "no_job_left")


@pytest.fixture
def no_job_left():
    """After each test, the queue's background jobs (time estimates measuring) cancelled and finished: none
    runs on into the next test, or into the process's exit."""
    yield
    from ui.jobs import job_queue

    queue = job_queue()
    for job in queue.jobs():
        queue.cancel(job)
        assert job.wait(TIMEOUT), f"{job.label} did not stop"


@pytest.fixture
def downloads(monkeypatch) -> dict[str, bytes]:
    """file name -> bytes of every download button drawn (AppTest keeps no media once a run ends)."""
    seen: dict[str, bytes] = {}
    real = MemoryMediaFileStorage.load_and_get_id

    def recording(self, path_or_data, mimetype, kind, filename=None):
        if filename is not None and isinstance(path_or_data, bytes):
            seen[filename] = path_or_data
        return real(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", recording)
    return seen


@pytest.fixture
def page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.run()
    ok(at)
    return at


def upload_zip(at: AppTest, data: bytes, name: str = "faces.zip") -> AppTest:
    return ok(at.file_uploader(key="finetune_zip").set_value((name, data, "application/zip")).run())


def train_with(at: AppTest, epochs: int) -> AppTest:
    at.number_input(key="finetune_epochs").set_value(epochs).run()
    return ok(at.button(key="finetune_train").click().run())


def frame_with(at: AppTest, column: str):
    return next(element.value for element in at.dataframe if column in element.value.columns)


def chart_specs(at: AppTest) -> list[str]:
    return [chart.proto.spec for chart in at.get("vega_lite_chart") + at.get("arrow_vega_lite_chart")]


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def gallery(at: AppTest) -> list[tuple[str, str]]:
    """(true, predicted) of every image in the gallery below the confusion matrix, in order."""
    captions = [c.caption for image in at.get("image") for c in image.proto.imgs if " · predicted: " in c.caption]
    return [tuple(re.search(r"true: (.*) · predicted: (.*) \(", caption).groups()) for caption in captions]


def answer_lines(at: AppTest) -> list[str]:
    """The bold answer of each Try it result: a class, or "Not sure: ..."."""
    return [m.value.split("**")[1] for m in at.markdown if m.value.startswith("**") and " · " in m.value]


def best_guesses(at: AppTest) -> list[str]:
    """The top-1 label of each Try it result, whether or not it is below the threshold."""
    lines = [m.value for m in at.markdown if m.value.startswith("**") and " · " in m.value]
    return [
        re.search(r"best guess (.+) at ", line).group(1) if "best guess" in line else line.split("**")[1]
        for line in lines
    ]


def grass_tile() -> bytes:
    """A grass photo the example model has not seen: a tile of skimage's grass off the example's grid."""
    buffer = io.BytesIO()
    Image.fromarray(skdata.grass()[300:420, 40:160]).save(buffer, "PNG")
    return buffer.getvalue()


def test_empty_page_explains_what_to_bring(page):
    assert page.title[0].value == "Fine-tune"
    assert "Add your images above" in page.info[0].value
    assert [b.key for b in page.button] == ["finetune_try_example"]  # no Train button before there is a dataset


def test_the_example_dataset_trains_in_one_click_and_says_when_it_is_not_sure(page, downloads):
    ok(page.button(key="finetune_try_example").click().run())
    assert page.subheader[0].value == "75 images in 3 classes"
    assert frame_with(page, "images")["images"].tolist() == [25, 25, 25]
    assert "The example dataset: brick, grass and gravel" in page.info[0].value
    assert not page.warning and not page.error

    ok(page.button(key="finetune_train").click().run())  # the defaults: fast mode, 30 epochs
    trained = page.session_state["my_model"]
    assert trained.classes == ["brick", "grass", "gravel"]
    assert float(metric(page, "Validation accuracy").rstrip("%")) >= 90.0

    # With at most one mistake in 15, some cell off the diagonal is empty: a click there says so.
    filled = {(t, p) for t, p, _ in trained.metrics.cells()}
    true, predicted = next((t, p) for t in trained.classes for p in trained.classes if t != p and (t, p) not in filled)
    ok(select_on_chart(page, "finetune_confusion", CELL_SELECTION, [{"true": true, "predicted": predicted}]))
    assert f"No validation image of {true} was predicted as {predicted}." in [i.value for i in page.info]
    assert page.selectbox(key="finetune_cell").value == (true, predicted)

    # The "not sure" threshold: the model's default, on a slider, with what it means on the validation images.
    assert 1 / 3 <= trained.threshold <= 0.9
    assert page.slider(key="finetune_threshold").value == round(trained.threshold * 100)
    share = passing_share(trained.metrics.outcomes, trained.threshold)
    assert any(f"{share:.0%} of the correctly classified validation images reach it" in c.value for c in page.caption)

    # Try it: a cat is none of brick, grass, gravel; a grass tile is grass.
    probes = [("chelsea.jpg", (EXAMPLES / "chelsea.jpg").read_bytes()), ("grass.png", grass_tile())]
    ok(page.file_uploader(key="finetune_try_files").set_value([(n, d, "image/png") for n, d in probes]).run())
    assert answer_lines(page) == ["Not sure: unlike the images it was trained on", "grass"]
    assert page.slider(key="finetune_min_similarity").value == trained.familiarity.min_similarity
    # Both tests at 0: the same results (not classified again), every answer a class.
    ok(page.slider(key="finetune_threshold").set_value(0).run())
    ok(page.slider(key="finetune_min_similarity").set_value(0.0).run())
    assert trained.threshold == 0.0 == trained.familiarity.min_similarity and answer_lines(page) == ["grass", "grass"]
    manifest = zipfile.ZipFile(io.BytesIO(downloads["zooscope-efficientnet_lite0-3classes.zip"])).read("manifest.json")
    assert json.loads(manifest)["familiarity"]["min_similarity"] == 0.0 == json.loads(manifest)["threshold"]

    ok(page.button(key="finetune_remove_example").click().run())
    assert "Add your images above" in page.info[0].value
    assert "finetune_train" not in [b.key for b in page.button]


def test_own_images_replace_the_example(page, faces_zip):
    ok(page.button(key="finetune_try_example").click().run())
    upload_zip(page, faces_zip)
    assert page.subheader[0].value == "60 images in 2 classes"
    assert page.session_state["finetune_example"] is False


def test_zip_trains_shows_results_and_exports_a_working_bundle_and_onnx(page, faces, faces_zip, downloads):
    upload_zip(page, faces_zip)
    counts = frame_with(page, "images")
    assert counts.to_dict("records") == [{"class": "face", "images": 30}, {"class": "other", "images": 30}]
    split = frame_with(page, "validation")
    assert split["validation"].tolist() == [6, 6] and split["train"].tolist() == [24, 24]
    assert len(page.get("image")) >= 2  # a row of thumbnails per class
    assert not page.error

    train_with(page, 10)
    trained = page.session_state["my_model"]
    assert isinstance(trained, TrainedModel) and trained.classes == ["face", "other"]
    assert float(metric(page, "Validation accuracy").rstrip("%")) >= 90.0
    assert metric(page, "Epochs run") == str(trained.epochs_run)
    assert set(frame_with(page, "precision")["class"]) == {"face", "other"}
    specs = chart_specs(page)
    assert any('"rect"' in spec for spec in specs)  # the confusion heat map
    assert any('"line"' in spec and '"validation"' in spec for spec in specs)  # the training curves
    assert "finetune_stop" not in [b.key for b in page.button]  # the run after training redraws without it
    assert "finetune_use_on_classify" in [b.key for b in page.button]

    # Try it: two new photos, classified by the trained model.
    probes = [("probe-face.png", faces["face"][50]), ("probe-other.png", faces["other"][50])]
    ok(page.file_uploader(key="finetune_try_files").set_value([(n, d, "image/png") for n, d in probes]).run())
    assert best_guesses(page) == ["face", "other"]  # (a guess below the threshold reads "Not sure" first)

    # The bundle the download button serves imports back and answers like the model in the session.
    assert [b.proto.label for b in page.get("download_button")] == ["Download the model bundle (.zip)"]
    bundle = downloads["zooscope-efficientnet_lite0-2classes.zip"]
    loaded = load_model("efficientnet_lite0")
    imported = import_bundle(bundle, loaded_for=lambda key: load_model(key.name, weights=key.weights))
    assert imported.classes == trained.classes
    ours, theirs = trained.classify_files(loaded, probes, k=2), imported.classify_files(loaded, probes, k=2)
    assert [r.top1.label for r in ours] == [r.top1.label for r in theirs] == ["face", "other"]
    assert np.allclose([r.top1.probability for r in ours], [r.top1.probability for r in theirs], atol=1e-6)

    # ONNX on request; its logits agree with the model in the session.
    ok(page.button(key="finetune_prepare_onnx").click().run())
    assert not page.error
    model = onnx.load_from_string(downloads["zooscope-efficientnet_lite0-2classes.onnx"])
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    assert json.loads(metadata["classes"]) == ["face", "other"]
    import onnxruntime

    images = [Image.open(io.BytesIO(data)).convert("RGB") for _, data in probes]
    batch = np.stack([loaded.preprocess(image).numpy() for image in images])
    (logits,) = onnxruntime.InferenceSession(model.SerializeToString()).run(None, {"image": batch})
    expected = trained.predict(images, loaded).numpy()
    assert np.allclose(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), expected, atol=1e-4)

    # int8 beside it, calibrated on the training images; both say how they agree on the validation images.
    int8 = onnx.load_from_string(downloads["zooscope-efficientnet_lite0-2classes-int8.onnx"])
    assert json.loads({prop.key: prop.value for prop in int8.metadata_props}["classes"]) == ["face", "other"]
    said = " ".join(c.value for c in page.caption)
    assert "same top-1 as PyTorch on 12 of 12 (100.0%) of your 12 validation images" in said
    assert "same top-1 as fp32 on" in said and "calibrated on 48 images" in said
    # The verdict names its reason: speed, faithfulness to fp32's answers, or both.
    verdict = next(m.value for m in [*page.success, *page.warning] if m.value.startswith("int8: "))
    assert re.search(r"int8: (Recommended|Faster|Faithful|Not recommended)", verdict)
    assert re.search(r"faster than fp32|slower than fp32|same top-1 as fp32", verdict)


def test_mistakes_gallery_shows_the_most_confident_mistakes_first(page, faces):
    # Labels drawn at random over faces and non-faces: there is nothing to learn, so there are mistakes.
    pool = faces["face"][:30] + faces["other"][:30]
    order = np.random.default_rng(0).permutation(len(pool))
    upload_zip(page, zip_of({"a": [pool[i] for i in order[:30]], "b": [pool[i] for i in order[30:]]}))
    train_with(page, 5)
    trained = page.session_state["my_model"]
    mistakes = trained.metrics.mistakes
    assert mistakes
    captions = [c for image in page.get("image") for c in image.proto.imgs if "predicted:" in c.caption]
    assert len(captions) == min(len(mistakes), 24)
    first = mistakes[0]
    assert captions[0].caption.endswith(f"true: {first.true} · predicted: {first.predicted} ({first.confidence:.0%})")
    assert f"**{len(mistakes)} validation images misclassified**" in [m.value.split(",")[0] for m in page.markdown]


def test_a_confusion_cell_filters_the_gallery_and_the_way_back_shows_all(page, faces):
    pool = faces["face"][:30] + faces["other"][:30]
    order = np.random.default_rng(0).permutation(len(pool))
    upload_zip(page, zip_of({"a": [pool[i] for i in order[:30]], "b": [pool[i] for i in order[30:]]}))
    train_with(page, 5)
    metrics = page.session_state["my_model"].metrics
    true, predicted, count = metrics.cells()[0]  # the most frequent mistake
    assert true != predicted and count >= 1
    everything = gallery(page)
    assert len(everything) == len(metrics.mistakes)

    # A click on that cell of the heat map: only those images, and the selectbox says which.
    first_chart = chart_key(page, "finetune_confusion")
    ok(select_on_chart(page, "finetune_confusion", CELL_SELECTION, [{"true": true, "predicted": predicted}]))
    assert page.selectbox(key="finetune_cell").value == (true, predicted)
    assert gallery(page) == [(true, predicted)] * count
    heading = f"**{count} validation images of {true} predicted as {predicted}**"
    assert any(m.value.startswith(heading) for m in page.markdown)

    # The way back: every mistake again, and a fresh chart (no cell left highlighted).
    ok(page.button(key="finetune_show_all").click().run())
    assert page.selectbox(key="finetune_cell").value == ALL_MISTAKES
    assert gallery(page) == everything
    assert chart_key(page, "finetune_confusion") != first_chart

    # The keyboard's way, the selectbox: a diagonal cell shows the images classified correctly.
    correct = next(n for t, p, n in metrics.cells() if t == p == true)
    assert f"{true}, classified correctly ({correct})" in page.selectbox(key="finetune_cell").options
    shown_all = chart_key(page, "finetune_confusion")
    ok(page.selectbox(key="finetune_cell").set_value((true, true)).run())
    assert gallery(page) == [(true, true)] * correct
    assert chart_key(page, "finetune_confusion") != shown_all  # the chart's old highlight is gone
    assert any(f"**{correct} validation images of {true} classified correctly**" in m.value for m in page.markdown)


def test_a_backbone_whose_weights_are_missing_is_reported(page, faces_zip):
    upload_zip(page, faces_zip)
    options = page.selectbox(key="finetune_backbone").options
    assert [option.split(" · ")[0] for option in options[:3]] == [
        "efficientnet_lite0",
        "efficientnet_lite1",
        "efficientnet_lite2",
    ]
    page.selectbox(key="finetune_backbone").set_value("resnet18").run()
    ok(page.button(key="finetune_train").click().run())
    assert any("resnet18-f37072fd.pth" in error.value for error in page.error)
    assert "my_model" not in page.session_state


def test_single_class_zip_is_refused_with_a_reason(page, faces):
    upload_zip(page, zip_of({"face": faces["face"][:5]}))
    assert any("only 1 class" in error.value for error in page.error)
    assert "finetune_train" not in [b.key for b in page.button]


def test_a_file_that_is_not_a_zip_is_refused(page):
    upload_zip(page, b"these are holiday notes, not a zip", name="photos.zip")
    assert any("not a valid zip" in error.value for error in page.error)
    assert "finetune_train" not in [b.key for b in page.button]


def test_skipped_files_and_warnings_are_listed_without_folder_entries(page, faces):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("set/", b"")
        for label in ("face", "other"):
            archive.writestr(f"set/{label}/", b"")
            for i in range(3):
                archive.writestr(f"set/{label}/{i}.png", faces[label][i])
        archive.writestr("set/face/notes.txt", b"taken in spring")
        archive.writestr("__MACOSX/set/._face", b"\x00\x05")
    upload_zip(page, buffer.getvalue())
    skipped = frame_with(page, "reason")
    assert sorted(skipped["file"]) == ["__MACOSX/set/._face", "set/face/notes.txt"]
    assert any("folder entries" in caption.value for caption in page.caption)
    assert any("only 3 images" in warning.value for warning in page.warning)
    assert "finetune_train" in [b.key for b in page.button]


def test_classes_one_by_one_train(page, faces):
    for i, label in enumerate(("face", "other")):
        page.text_input(key=f"finetune_class_name_{i}").set_value(label)
        files = [(f"{label}{n}.png", faces[label][n], "image/png") for n in range(3)]
        page.file_uploader(key=f"finetune_class_files_{i}").set_value(files)
    ok(page.run())
    assert frame_with(page, "images").to_dict("records") == [
        {"class": "face", "images": 3},
        {"class": "other", "images": 3},
    ]
    train_with(page, 3)
    trained = page.session_state["my_model"]
    assert trained.classes == ["face", "other"] and trained.epochs_run == 3
    assert any('"rect"' in spec for spec in chart_specs(page))


def test_class_and_file_names_are_shown_as_typed(page, faces):
    names = ("*bold*", "[click](https://example.com)")
    for i, name in enumerate(names):
        page.text_input(key=f"finetune_class_name_{i}").set_value(name)
        files = [(f"$x$ {n}.png", faces["face" if i == 0 else "other"][n], "image/png") for n in range(2)]
        page.file_uploader(key=f"finetune_class_files_{i}").set_value(files)
    ok(page.run())
    assert frame_with(page, "images")["class"].tolist() == sorted(names)
    shown = [m.value for m in page.markdown] + [c.caption for image in page.get("image") for c in image.proto.imgs]
    assert "**\\*bold\\***" in shown and "**\\[click\\]\\(https\\:\\/\\/example\\.com\\)**" in shown
    assert "\\$x\\$ 0\\.png" in shown
    assert not any("](https://" in text for text in shown)


def test_an_interrupted_training_keeps_the_best_model_so_far(monkeypatch, page, faces_zip):
    """A click while training starts a new run at once and stops the training run at its next st.* call,
    the chart update in on_epoch (Streamlit raises StopException there). Simulated here at epoch 3; then
    the click's own run (Stop) takes over the best model so far and says so."""
    import ui.finetune.run as views

    drawn = []
    real = views.training_curves

    def stopped_at_epoch_3(frame):
        drawn.append(len(frame))
        if len(drawn) == 3:
            raise StopException()
        return real(frame)

    monkeypatch.setattr(views, "training_curves", stopped_at_epoch_3)
    upload_zip(page, faces_zip)
    train_with(page, 30)
    run = page.session_state["finetune_run"]
    assert run.finished.is_set() and not run.done and run.model is not None

    ok(page.button(key="finetune_stop").click().run())
    kept = page.session_state["my_model"]
    assert kept is run.model
    assert kept.epochs_run == 3 and kept.stopped_by_user and len(kept.history) == 3
    assert kept.best_epoch == min(kept.history, key=lambda log: log.val_loss).epoch
    assert any(f"Stopped after epoch 3: kept the best epoch so far ({kept.best_epoch})" in i.value for i in page.info)
    assert any("Stopped after epoch 3 of 30" in caption.value for caption in page.caption)
    assert metric(page, "Epochs run") == "3"
    assert [b.proto.label for b in page.get("download_button")] == ["Download the model bundle (.zip)"]


def test_use_it_on_the_classify_page(faces_zip):
    if FINETUNE not in PAGES:
        pytest.skip("the app does not list the Fine-tune page yet")
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    ok(app.run())
    ok(app.switch_page(FINETUNE.file).run())
    upload_zip(app, faces_zip)
    train_with(app, 5)
    trained_run = frame_with(app, "kept epoch").iloc[0].to_dict()
    ok(app.slider(key="finetune_threshold").set_value(42).run())
    ok(app.button(key="finetune_use_on_classify").click().run())
    assert app.title[0].value == "Classify"
    assert app.selectbox(key="classify_model").value == "my model"
    assert app.slider(key="classify_threshold").value == 42  # the model holds the threshold, on every page

    # A bundle imported on Classify is a run of its own: the trained run keeps its details.
    trained = app.session_state["my_model"]
    ok(app.switch_page(CLASSIFY.file).run())  # AppTest's next run follows its own page, not st.switch_page's
    app.file_uploader(key="classify_bundle").set_value(("mine.zip", export_bundle(trained), "application/zip"))
    ok(app.run())
    imported = app.session_state["my_model"]
    assert imported is not trained and app.selectbox(key="classify_model").value == "my model"

    # Back on Fine-tune (Streamlit emptied the zip's widget meanwhile): the dataset is still there, and both runs.
    ok(app.switch_page(FINETUNE.file).run())
    assert app.file_uploader(key="finetune_zip").value is None
    assert any(shown(i.value).startswith("Using faces.zip: 60 images in 2 classes.") for i in app.info)
    assert app.subheader[0].value == "60 images in 2 classes" and "finetune_train" in [b.key for b in app.button]
    runs = frame_with(app, "kept epoch")
    assert runs["source"].tolist() == ["trained here", "imported: mine.zip"] and runs["run"].tolist() == [1, 2]
    assert runs.iloc[0].to_dict() == trained_run
    assert app.selectbox(key="finetune_run_pick").value == 2
    ok(app.selectbox(key="finetune_run_pick").set_value(1).run())
    assert app.session_state["my_model"] is trained and trained.history  # its own details, not the bundle's

    ok(app.button(key="finetune_clear_dataset").click().run())
    assert "Add your images above" in app.info[0].value


@pytest.fixture(scope="module")
def glyphs_zip() -> bytes:
    """Rendered digits 0, 1, 2 (tests/glyphs.py): images unlike photos, the case fine-tuning is for."""
    return zip_of({f"digit_{label}": list(images) for label, images in glyph_pngs(8).items() if label in "012"})
