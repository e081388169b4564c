"""Compare in a real browser: the three bundled models on two photos, the tables, the chart, Grad-CAM."""

import re
from pathlib import Path

import pytest

from tests.e2e.test_navigation_browser import capture, drawn, photo_input

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
COFFEE = ROOT / "assets/examples/coffee.jpg"
CHELSEA = ROOT / "assets/examples/chelsea.jpg"
LITE = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


def loaded_images(page) -> int:
    """How many st.image pictures are on the page, fully loaded and not empty."""
    return page.evaluate(
        "() => [...document.querySelectorAll(\"[data-testid='stMain'] [data-testid='stImage'] img\")]"
        ".filter(img => img.complete && img.naturalWidth > 0).length"
    )


def test_three_models_on_two_photos_with_explanations(page, screenshot):
    page.locator("[data-testid='stSidebarNav']").get_by_role("link", name="Compare").click()
    page.get_by_role("heading", name="Compare").first.wait_for()
    chosen = page.locator("[data-testid='stMultiSelect']").first
    for name in LITE:  # the offline default trio
        chosen.get_by_text(name, exact=True).wait_for()

    photo_input(page).set_input_files([str(COFFEE), str(CHELSEA)])
    page.get_by_role("heading", name="The models").wait_for()
    page.get_by_role("heading", name="Agreement").wait_for()
    drawn(page)
    tables = page.locator("[data-testid='stDataFrame']")
    assert tables.first.is_visible()
    tables.nth(2 + 2 * len(LITE) - 1).wait_for()  # models, agreement, each photo's top-k per model
    chart = page.locator("[data-testid='stVegaLiteChart']").first
    assert chart.is_visible() and chart.bounding_box()["height"] > 100
    assert chart.locator("canvas, svg").first.is_visible()  # drawn, not a placeholder
    coffee_card = page.locator("[data-testid='stVerticalBlock']").filter(
        has=page.get_by_role("heading", name="coffee.jpg")
    )
    coffee_card.last.get_by_text(re.compile(r"All models agree · consensus espresso \(\d")).wait_for()
    page.get_by_role("heading", name="chelsea.jpg").wait_for()
    images_before = loaded_images(page)
    assert images_before == 2  # the two thumbnails

    page.get_by_text("Explain: show where each model looks (Grad-CAM)").click()
    page.get_by_role("heading", name="Where each model looks").wait_for()
    for name in LITE:
        page.get_by_text(re.compile(rf"^{name}: espresso \(\d")).wait_for()
    drawn(page)
    page.wait_for_function(
        "n => [...document.querySelectorAll(\"[data-testid='stMain'] [data-testid='stImage'] img\")]"
        ".filter(img => img.complete && img.naturalWidth > 0).length >= n",
        arg=images_before + len(LITE),
    )
    assert loaded_images(page) == images_before + len(LITE)  # one heat map per model
    assert page.locator("[data-testid='stException']").count() == 0
    assert page.get_by_text("Traceback").count() == 0
    capture(page, screenshot, "compare")


def test_hostile_files_and_names_in_a_real_browser(page, screenshot):
    """Every refused file of tests/hostile.py, with the coffee photo and the rocket under the odd name
    (the AppTest compares the whole corpus): each error visible, every file name exactly as typed (no
    Markdown link, bold or LaTeX made of it), the rest compared."""
    from tests import hostile

    cases = [case for case in hostile.corpus() if case.expect == "error" or case.name == hostile.ODD_NAME]
    page.locator("[data-testid='stSidebarNav']").get_by_role("link", name="Compare").click()
    page.get_by_role("heading", name="Compare").first.wait_for()
    coffee = {"name": "coffee.jpg", "mimeType": "image/jpeg", "buffer": COFFEE.read_bytes()}
    payloads = [{"name": case.name, "mimeType": case.mime, "buffer": case.data} for case in cases]
    photo_input(page).set_input_files([coffee, *payloads])  # payloads keep the names exactly
    page.get_by_role("heading", name="Agreement").wait_for()
    drawn(page)

    alerts = page.locator(
        "[data-testid='stMain'] [data-testid='stAlertContentError'] [data-testid='stMarkdownContainer']"
    )
    shown = [text.strip() for text in alerts.all_inner_texts()]
    bad = [case for case in cases if case.expect == "error"]
    assert len(shown) == len(bad), shown
    for case in bad:
        (text,) = [text for text in shown if text.startswith(f"{case.name}: ")]  # the name as typed, once
        assert all(word in text for word in case.words), text
    # No disguised link made of a name: "[click me](https://...)" stays text. (GitHub-flavoured Markdown
    # still links a bare URL in a name, showing exactly that URL: text and target are the same.)
    links = page.locator("[data-testid='stMain'] a[href*='example.com']")
    assert [link.inner_text() for link in links.all()] in ([], ["https://example.com"])
    assert page.get_by_role("link", name="click me").count() == 0
    for case in cases:
        if case.expect == "ok":
            page.get_by_role("heading", name=case.name, exact=True).wait_for()
    assert page.locator("[data-testid='stException']").count() == 0
    assert page.get_by_text("Traceback").count() == 0
    capture(page, screenshot, "compare-hostile-batch")
