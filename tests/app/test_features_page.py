"""The Features page through AppTest with the bundled EfficientNet-Lite0: photos and a zip of class folders,
the map and a click on it, neighbours, near-duplicates at the slider's threshold, a query photo, the k-NN
score per backbone, downloads; and the bad inputs: an unreadable file, an empty set, too few images for a
map, t-SNE above its measured size."""

import io
import json
import zipfile
from pathlib import Path

import pytest
from PIL import Image, ImageOps
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
from streamlit.testing.v1 import AppTest

from core.features import analysis as features
from tests.app.conftest import ok, select_on_chart, shown
from ui.charts import POINT_SELECTION
from ui.navigation import FEATURES

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "assets" / "examples"
TEXTURES = ROOT / "assets" / "datasets" / "textures"


pytestmark = pytest.mark.usefixtures("offline")


@pytest.fixture
def page(app) -> AppTest:
    return ok(app.switch_page(FEATURES.file).run())


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def mirrored(name: str) -> bytes:
    with Image.open(EXAMPLES / f"{name}.jpg") as opened:
        return jpeg(ImageOps.mirror(opened.convert("RGB")))


def texture_zip(per_class: int = 4) -> bytes:
    """Two class folders of texture tiles, a file that is empty and a README."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for texture in ("brick", "grass"):
            for path in sorted((TEXTURES / texture).glob("*.png"))[:per_class]:
                archive.write(path, f"textures/{texture}/{path.name}")
        archive.writestr("textures/brick/broken.png", b"")
        archive.writestr("textures/README.md", "about these tiles")
    return buffer.getvalue()


def upload(app: AppTest, *files: tuple[str, bytes]) -> AppTest:
    app.file_uploader(key="features_files").set_value([(name, data, "image/jpeg") for name, data in files]).run()
    return ok(app)


def map_data(app: AppTest):
    (chart,) = app.get("vega_lite_chart")
    (dataset,) = chart.proto.datasets
    return json.loads(chart.proto.spec), convert_arrow_bytes_to_pandas_df(dataset.data.data)


def texts(elements) -> list[str]:
    return [shown(element.value).replace("**", "") for element in elements]


def captions_of_images(app: AppTest) -> list[str]:
    """Every picture's caption on the page, in order."""
    found = []
    for element in app.get("image"):
        found += [image.caption for image in element.proto.imgs]
    return found


def test_photos_and_a_zip_map_neighbours_duplicates_query_and_score(page):
    page.button(key="features_examples_on").click().run()
    upload(page, ("chelsea-mirror.jpg", mirrored("chelsea")))
    page.file_uploader(key="features_zip").set_value(("textures.zip", texture_zip(), "application/zip")).run()
    ok(page)

    # The empty file is named, the README listed as left out, and the rest go through.
    assert texts(page.error) == ["textures/brick/broken.png: Could not read the file: The file is empty."]
    assert any("textures/README.md: Its name does not end in an image type" in text for text in texts(page.markdown))
    assert "12 images · 1,280 numbers each from efficientnet_lite0 · ONNX Runtime" in texts(page.caption)

    spec, frame = map_data(page)
    assert len(frame) == 12 and spec["mark"]["type"] == "circle"
    assert sorted(set(frame["label"])) == ["(no class)", "brick", "grass"]
    assert page.segmented_control(key="features_colour_2").options == ["label", "cluster"]
    assert frame["image"].str.startswith("data:image/jpeg;base64,").all()  # thumbnails in the tooltips
    files = list(frame["file"])

    # Near-duplicates at the default threshold: the mirrored copy with its original.
    # (Tiles of one texture photo group too: README "Near-duplicates" measures them as hard negatives.)
    groups = [text for text in texts(page.markdown) if text.startswith("Group ")]
    assert [text.split(",")[0] for text in groups] == ["Group 1: 4 images", "Group 2: 4 images", "Group 3: 2 images"]
    captions = captions_of_images(page)
    pair = captions.index("chelse…or.jpg")  # the upload comes before the examples; a long name cut in the middle
    assert captions[pair + 1] == "chelsea.jpg"

    # A click on rocket's point shows rocket's neighbours, most similar first.
    rocket = files.index("rocket.jpg")
    page = ok(select_on_chart(page, "features_map", POINT_SELECTION, [{"index": rocket}]))
    assert page.selectbox(key="features_focus").value == rocket
    neighbours = [caption for caption in captions_of_images(page) if "(chosen)" in caption or " · " in caption]
    assert neighbours[0] == "rocket.jpg (chosen)" and len(neighbours) == 1 + 5
    similarities = [float(caption.split(" · ")[0]) for caption in neighbours[1:]]
    assert similarities == sorted(similarities, reverse=True) and all(-1 <= s <= 1 for s in similarities)

    # A query photo finds the original first.
    page.file_uploader(key="features_query").set_value(("query.jpg", mirrored("coffee"), "image/jpeg")).run()
    captions = captions_of_images(ok(page))
    query = captions.index("query.jpg (the query)")
    assert captions[query + 1].endswith(" · coffee.jpg") and float(captions[query + 1].split(" · ")[0]) > 0.9

    # One backbone's k-NN score on the labelled images of the zip (8 tiles, 2 classes).
    (table,) = [element.value for element in page.dataframe if "accuracy" in element.value.columns]
    assert table[["backbone", "images", "classes"]].values.tolist() == [["efficientnet_lite0", 8, 2]]
    assert table["accuracy"].iloc[0] >= 0.75
    labels = [button.proto.label for button in page.get("download_button")]
    assert labels == ["Download the embeddings (Parquet)", "Download the embeddings (CSV)"]

    # The slider regroups at once: nothing is that similar.
    page.slider(key="features_threshold").set_value(0.99).run()
    assert any(text.startswith("No near-duplicates among 12 images at 0.99") for text in texts(ok(page).success))


def test_an_empty_set_and_a_set_of_nothing_readable(page):
    assert "the set is empty" in texts(page.info)[-1]
    assert not page.get("vega_lite_chart")
    upload(page, ("broken.jpg", b"\xff\xd8\xff truncated"), ("notes.jpg", b"hello"))
    assert len(page.error) == 3 and texts(page.error)[-1] == "None of the 2 files could be read as an image."
    assert not page.get("vega_lite_chart")


def test_two_images_get_no_map_but_a_sentence_why_and_are_embedded_once(page, monkeypatch):
    calls = []
    real_embed = features.embed
    monkeypatch.setattr(features, "embed", lambda *args, **kwargs: calls.append(1) or real_embed(*args, **kwargs))
    upload(page, ("rocket.jpg", (EXAMPLES / "rocket.jpg").read_bytes()), ("rocket-mirror.jpg", mirrored("rocket")))
    assert not page.get("vega_lite_chart")
    assert any(text.startswith("With 2 images there is no map") for text in texts(page.info))
    assert any(text.startswith("Group 1: 2 images") for text in texts(page.markdown))  # the rest still works
    assert any(text.startswith("1 group, 2 images in all") for text in texts(page.markdown))
    page.slider(key="features_threshold").set_value(0.999).run()
    assert any(text.startswith("No near-duplicates among 2 images") for text in texts(ok(page).success))
    assert len(calls) == 1  # kept in the session per (images, backbone): the slider never embeds again


def test_tsne_above_its_measured_size_is_refused_with_the_reason_and_pca_draws(page, monkeypatch):
    monkeypatch.setattr(features, "TSNE_MAX_IMAGES", 2)
    page.button(key="features_examples_on").click().run()
    page.segmented_control(key="features_projection").set_value("tsne").run()
    assert texts(ok(page).warning)[0].startswith("t-SNE maps at most 2 images here")
    _, frame = map_data(page)
    assert len(frame) == 3  # the PCA map of the three examples
    # No labels: the colours are k-means clusters, with no one-choice "Colour by" to show.
    assert "cluster" in frame.columns and [c.key for c in page.segmented_control] == ["features_projection"]


def test_two_backbones_scored_side_by_side(page, monkeypatch):
    monkeypatch.setenv("ZOOSCOPE_RUNTIME", "torch")  # PyTorch: no second ONNX export in this test
    page.multiselect(key="features_models").set_value(["efficientnet_lite0", "efficientnet_lite1"]).run()
    page.file_uploader(key="features_zip").set_value(("textures.zip", texture_zip(3), "application/zip")).run()
    (table,) = [element.value for element in ok(page).dataframe if "accuracy" in element.value.columns]
    assert table["backbone"].tolist() == ["efficientnet_lite0", "efficientnet_lite1"]
    assert (table["images"] == 6).all()
    page.selectbox(key="features_view").set_value("efficientnet_lite1").run()
    assert "6 images · 1,280 numbers each from efficientnet_lite1 · PyTorch" in texts(ok(page).caption)
