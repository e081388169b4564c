"""The Features page in a real browser: the example photos, a copy and a zip of class folders uploaded; the map
drawn with thumbnails in its tooltips, a point clicked for its neighbours, the near-duplicates found, the
k-NN score; and /features opened by its address."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from tests.e2e.conftest import captions_split_mid_word, fresh_page, settle, wait_for_text
from tests.faces import zip_of

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "assets" / "examples"
TEXTURES = ROOT / "assets" / "datasets" / "textures"


@pytest.fixture(scope="module", autouse=True)
def features_in_onnx_runtime():
    """EfficientNet-Lite0's feature export made in the run's ONNX cache before the page asks for it (the app
    server reads the same cache), so the browser never waits on a first export."""
    from core.engines.choice import load_handle
    from core.features.embedding import embedder_for
    from core.models.keys import ModelKey

    model = load_handle(ModelKey("efficientnet_lite0"), runtime_choice="onnx")
    assert embedder_for(model.torch, runtime=model.runtime).runtime == "onnx"


def keyed(page, key: str):
    return page.locator(f".st-key-{key}")


def open_features(page) -> None:
    page.locator("[data-testid='stSidebarNav']").get_by_role("link", name="Features").click()
    page.get_by_role("heading", name="Features").first.wait_for()
    settle(page)


def test_photos_and_a_zip_map_neighbours_and_duplicates(page, screenshot, tmp_path):
    open_features(page)
    copy = tmp_path / "chelsea-mirror.jpg"
    with Image.open(EXAMPLES / "chelsea.jpg") as opened:
        ImageOps.mirror(opened.convert("RGB")).save(copy, "JPEG", quality=90)
    archive = tmp_path / "textures.zip"
    tiles = {
        name: [path.read_bytes() for path in sorted((TEXTURES / name).glob("*.png"))[:4]] for name in ("brick", "grass")
    }
    archive.write_bytes(zip_of(tiles, root="textures"))

    keyed(page, "features_examples_on").locator("button").click()
    settle(page)
    keyed(page, "features_files").locator("input[type='file']").set_input_files(str(copy))
    # Each upload's run finished before the next input: a new upload mid-run would interrupt it.
    wait_for_text(page, "4 images · 1,280 numbers each from efficientnet_lite0", timeout=120_000)
    settle(page)
    page.get_by_role("tab", name="Zip of class folders").click()
    keyed(page, "features_zip").locator("input[type='file']").set_input_files(str(archive))
    wait_for_text(page, "12 images · 1,280 numbers each from efficientnet_lite0", timeout=120_000)
    settle(page)

    # The map: one point per image; hovering one shows its thumbnail.
    chart = page.locator("[data-testid='stVegaLiteChart']").first
    chart.scroll_into_view_if_needed()
    points = chart.locator("path[aria-label*='file: ']")
    points.first.wait_for()
    assert points.count() == 12
    rocket = chart.locator("path[aria-label*='file: rocket.jpg']")
    rocket.hover()
    page.locator("#vg-tooltip-element img").wait_for()

    # A click on rocket's point: its neighbours, most similar first.
    rocket.click()
    page.get_by_text("rocket.jpg (chosen)").wait_for()
    settle(page)
    captions = page.locator("[data-testid='stImageCaption']").all_inner_texts()
    chosen = captions.index("rocket.jpg (chosen)")
    similarities = [float(caption.split(" · ")[0]) for caption in captions[chosen + 1 : chosen + 6]]
    assert similarities == sorted(similarities, reverse=True)

    # The near-duplicates: the mirrored copy with its original, as a row of images.
    page.get_by_text(re.compile(r"Group \d+: 2 images, loosest pair")).wait_for()
    pair = captions.index("chelse…or.jpg")  # a long name cut in the middle, never split mid-word
    assert captions[pair + 1] == "chelsea.jpg"
    assert captions_split_mid_word(page) == []
    page.get_by_text(re.compile(r"efficientnet_lite0 separates your classes best: \d")).wait_for()
    assert page.locator("[data-testid='stException']").count() == 0
    screenshot("features")

    # Which layer fits: the same zip probed on every stage; the chart names its axes and marks the best stage.
    keyed(page, "transfer_zip").locator("input[type='file']").set_input_files(str(archive))
    settle(page)
    keyed(page, "transfer_run").locator("button").click()
    wait_for_text(page, "On textures.zip: 8 images in 2 classes", timeout=120_000)
    depth = page.locator("[data-testid='stVegaLiteChart']").last
    depth.scroll_into_view_if_needed()
    depth.get_by_text("relative depth (0: input, 1: penultimate layer)").wait_for()
    stages = {"bn1", "bn2", "penultimate", *(f"blocks.{n}" for n in range(7))}
    assert stages & set(depth.locator("text").all_text_contents())  # the best stage, named beside its mark
    assert page.locator("[data-testid='stException']").count() == 0


def test_features_opens_by_its_address(browser, server_url):
    with fresh_page(browser, f"{server_url}/features") as page:
        page.get_by_role("heading", name="Features").first.wait_for()
        page.get_by_text("Add photos above, or a zip of images: the set is empty.").wait_for()
        assert page.locator("[data-testid='stException']").count() == 0
