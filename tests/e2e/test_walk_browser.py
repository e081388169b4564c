"""A new user's walk through the six tasks at 1280 px, in one session, asserting that what a first visit
found wrong (issue 25) is right: numbers that say what they measure, nothing clipped, heat maps beside
their toggle, a fine-tuned model that says "unlike the images it was trained on", Fine-tune keeping its
images, Inside's photo first and its chart in order, the Models page's limits.

Classify + int8 + CSV; Compare + Explain; Fine-tune + a confusion cell + Try it + Classify with its bundle;
Inside with a photo and side by side; Features' "Which layer fits" and Fine-tune's suggestion from it;
Models with a filter."""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.e2e.conftest import settle, wait_for_text
from tests.e2e.test_navigation_browser import drawn, photo_input
from tests.faces import zip_of
from tests.glyphs import glyph_pngs

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "assets" / "examples"
WINDOW = {"width": 1280, "height": 900}

# A table (a glide data grid on a canvas) whose columns do not fit scrolls sideways inside itself.
SCROLLING_SIDEWAYS = """() => [...document.querySelectorAll("[data-testid='stDataFrame'] .dvn-scroller")]
    .filter(scroller => scroller.scrollWidth > scroller.clientWidth + 1)
    .map(scroller => [scroller.scrollWidth, scroller.clientWidth])"""


def keyed(page, key: str):
    return page.locator(f".st-key-{key}")


def go(page, name: str) -> None:
    page.locator("[data-testid='stSidebarNav']").get_by_role("link", name=name).click()
    page.get_by_role("heading", name=name).first.wait_for()
    settle(page)


@contextmanager
def whole_page_in_view(page):
    """Streamlit draws a table only once it scrolls into view: show the whole page, then restore."""
    height = page.evaluate("() => document.querySelector(\"[data-testid='stMain']\").scrollHeight")
    page.set_viewport_size({"width": WINDOW["width"], "height": max(WINDOW["height"], min(height, 12_000))})
    try:
        drawn(page)
        yield
    finally:
        page.set_viewport_size(WINDOW)


def tables_scrolling_sideways(page) -> list:
    with whole_page_in_view(page):
        return page.evaluate(SCROLLING_SIDEWAYS)


def top(locator) -> float:
    return locator.bounding_box()["y"]


def classify_with_int8_and_csv(page) -> None:
    page.goto(page.url.rstrip("/") + "/classify")  # typed into the address bar: Classify, not "Page not found"
    page.get_by_role("heading", name="Classify").first.wait_for()
    assert page.get_by_text("Page not found").count() == 0
    photo_input(page).set_input_files([str(EXAMPLES / "coffee.jpg"), str(EXAMPLES / "rocket.jpg")])
    page.get_by_text("espresso ·").first.wait_for()
    # A card's latency says what it times: the photo's share of its batch, with preprocessing.
    page.get_by_text(re.compile(r"ms per photo with preprocessing, on CPU")).first.wait_for()
    keyed(page, "classify_int8").get_by_text("int8: quantized by ONNX Runtime").click()
    # The int8 line times the model alone and gives its verdict's reason, agreement with fp32 in numbers.
    wait_for_text(page, "model alone (one forward, batch 1, no preprocessing)", timeout=240_000)
    assert page.get_by_text(re.compile(r"same top-1 as fp32 on \d+ of \d+ check photos")).count() >= 1
    page.get_by_text("espresso ·").first.wait_for()
    with page.expect_download() as download:
        page.get_by_role("button", name="Download all top-k rows (CSV)").click()
    csv = Path(download.value.path()).read_text()
    assert csv.splitlines()[0].startswith("file,model,rank,label,probability")
    assert "efficientnet_lite0 · int8" in csv
    assert tables_scrolling_sideways(page) == []


def compare_and_explain(page) -> None:
    go(page, "Compare")
    page.get_by_role("button", name="Try an example").click()
    page.get_by_role("heading", name="Agreement").wait_for(timeout=180_000)
    explain = page.get_by_text("Explain: show where each model looks (Grad-CAM)")
    explain.click()
    page.get_by_role("heading", name="Where each model looks").wait_for()
    page.get_by_text(re.compile(r"^efficientnet_lite0: .+ heat map")).first.wait_for(timeout=120_000)
    drawn(page)
    # The heat maps come right after their toggle, before the first photo's card.
    heat_maps = page.get_by_text(re.compile(r"^efficientnet_lite2: .+ heat map")).first
    first_card = page.get_by_role("heading", name="chelsea.jpg").first
    assert top(explain) < top(heat_maps) < top(first_card)
    assert tables_scrolling_sideways(page) == []


def fine_tune_try_it_and_bundle(page, tmp_path: Path) -> None:
    go(page, "Fine-tune")
    page.get_by_role("button", name="Try an example dataset").click()
    page.get_by_text("75 images in 3 classes").wait_for()
    settle(page)
    keyed(page, "finetune_train").locator("button").click()
    page.get_by_text("Confusion matrix").wait_for(timeout=180_000)
    heat_map = page.locator("[data-testid='stVegaLiteChart']").filter(has=page.locator("[aria-label^='predicted:']"))
    heat_map.wait_for(timeout=60_000)
    settle(page)
    cell = heat_map.locator("path[aria-label^='predicted: brick; true: brick; images:']")
    count = int(cell.get_attribute("aria-label").rsplit(" ", 1)[1])
    cell.click()
    page.get_by_text(f"{count} validation images of brick classified correctly").wait_for()

    # Try it with a cat: none of brick, grass, gravel, and unlike every training image.
    keyed(page, "finetune_try_files").locator("input[type='file']").set_input_files(str(EXAMPLES / "chelsea.jpg"))
    page.get_by_text("Not sure: unlike the images it was trained on").first.wait_for()

    with page.expect_download() as download:
        keyed(page, "finetune_download_bundle").locator("button").click()
    bundle = tmp_path / download.value.suggested_filename
    download.value.save_as(bundle)

    # The bundle on Classify: the cat is not passed off as a confident texture.
    go(page, "Classify")
    uploader = keyed(page, "classify_bundle").locator("input[type='file']")
    expander = page.locator("[data-testid='stExpander']").filter(has=uploader)
    if expander.count() and expander.first.locator("details").get_attribute("open") is None:
        expander.first.locator("summary").click()
    uploader.set_input_files(str(bundle))
    page.get_by_text(re.compile(r"Loaded my model")).wait_for()
    settle(page)
    keyed(page, "classify_files").locator("input[type='file']").set_input_files(str(EXAMPLES / "chelsea.jpg"))
    page.get_by_text(re.compile(r"Not sure: unlike the images it was trained on")).first.wait_for()

    # Back on Fine-tune: the example is still there, the trained run too, and the import is a run of its own.
    go(page, "Fine-tune")
    page.get_by_text("75 images in 3 classes").wait_for()
    picked = keyed(page, "finetune_run_pick").get_by_role("combobox")
    assert re.match(r"Run 2: imported: ", picked.input_value())


def inside_with_a_photo_and_side_by_side(page) -> None:
    go(page, "Inside")
    photo_input(page).set_input_files(str(EXAMPLES / "chelsea.jpg"))
    # With a photo, what each stage sees is the first tab, and open.
    seen = page.get_by_role("tab", name="What each stage sees", exact=True)
    page.wait_for_function(
        "() => { const t = document.querySelector('[role=tab]');"
        " return t && t.innerText.trim() === 'What each stage sees' && t.getAttribute('aria-selected') === 'true' }"
    )
    assert seen.get_attribute("aria-selected") == "true"
    drawn(page)
    page.get_by_role("tab", name="Side by side", exact=True).click()
    drawn(page)
    # The parameters per stage, drawn (its order, in network order with the head apart, is checked on the
    # chart's spec in tests/app/test_inside_page.py: the browser draws it on a canvas).
    chart = page.locator("[data-testid='stVegaLiteChart']").first
    chart.wait_for()
    assert chart.bounding_box()["height"] > 100
    assert tables_scrolling_sideways(page) == []


def features_which_layer_then_fine_tune_from_it(page, tmp_path: Path) -> None:
    """Rendered digits (tests/glyphs.py) are unlike ImageNet's photos: a middle stage fits them clearly better
    than the penultimate layer, and Fine-tune then suggests training from it."""
    archive = tmp_path / "glyphs.zip"
    archive.write_bytes(zip_of({f"digit_{k}": list(v) for k, v in glyph_pngs(10).items() if k in "0123"}))
    go(page, "Features")
    page.get_by_role("heading", name="Which layer fits your images").wait_for()
    assert page.get_by_text("Colour by").count() == 0  # nothing to colour by before any labelled images
    keyed(page, "transfer_zip").locator("input[type='file']").set_input_files(str(archive))
    keyed(page, "transfer_zip").get_by_text("glyphs.zip").wait_for()  # uploaded: its rerun is under way
    settle(page)
    keyed(page, "transfer_run").locator("button").click()
    wait_for_text(page, "beats the penultimate layer by", timeout=180_000)
    depth = page.locator("[data-testid='stVegaLiteChart']").last
    depth.scroll_into_view_if_needed()
    depth.get_by_text("relative depth (0: input, 1: penultimate layer)").wait_for()
    assert tables_scrolling_sideways(page) == []

    go(page, "Fine-tune")
    page.get_by_role("tab", name="Zip of class folders").click()
    keyed(page, "finetune_zip").locator("input[type='file']").set_input_files(str(archive))
    page.get_by_text("40 images in 4 classes").wait_for()
    suggested = page.get_by_text(re.compile(r"^(\S+) fits your images better than the last layer"))
    suggested.wait_for()
    stage = suggested.inner_text().split()[0]
    keyed(page, "finetune_features_from_suggested").locator("button").click()
    chosen = keyed(page, "finetune_features_from").get_by_role("combobox")
    page.wait_for_function("([input, stage]) => input.value === stage", arg=[chosen.element_handle(), stage])
    page.get_by_text(re.compile(r"fits your images better than the last layer")).wait_for(state="detached")


def models_with_a_filter(page) -> None:
    from core.models.catalog import all_specs

    go(page, "Models")
    least = keyed(page, "models_min_acc1").locator("input")
    least.fill("75")
    least.press("Enter")
    settle(page)
    smallest = min(
        (spec for spec in all_specs().values() if spec.meta["_metrics"]["ImageNet-1K"]["acc@1"] >= 75),
        key=lambda spec: spec.file_size_mb,
    )
    page.get_by_text(f"Smallest of these: {smallest.name}").wait_for()
    assert tables_scrolling_sideways(page) == []


def test_a_new_user_walks_the_six_tasks_at_1280_px(browser, server_url, tmp_path):
    context = browser.new_context(viewport=WINDOW, accept_downloads=True)
    try:
        page = context.new_page()
        page.set_default_timeout(90_000)
        page.goto(server_url)
        page.get_by_role("heading", name="Classify").first.wait_for()
        classify_with_int8_and_csv(page)
        compare_and_explain(page)
        fine_tune_try_it_and_bundle(page, tmp_path)
        inside_with_a_photo_and_side_by_side(page)
        features_which_layer_then_fine_tune_from_it(page, tmp_path)
        models_with_a_filter(page)
        assert page.get_by_text("Traceback").count() == 0
    finally:
        context.close()
