"""Every page in the sidebar navigation opens in a real browser: its heading, no exception, a screenshot."""

import re

import pytest

from tests.e2e.conftest import settle

pytestmark = pytest.mark.e2e

REQUIRED = ["Classify", "Compare", "Models"]  # Fine-tune too, once app.py lists it


def drawn(page) -> None:
    """settle(), then wait until no element is still a loading skeleton (tables and charts load lazily)."""
    settle(page)
    page.wait_for_function("() => !document.querySelector(\"[data-testid='stMain'] [data-testid='stSkeleton']\")")


def photo_input(page):
    """The "Upload photos" file input (Classify also has one for model bundles)."""
    uploader = page.locator("[data-testid='stFileUploader']").filter(has_text="Upload photos")
    return uploader.locator("[data-testid='stFileUploaderDropzoneInput']")


def capture(page, screenshot, name: str) -> None:
    """The whole page in one picture, every table and chart drawn: Streamlit scrolls inside its main
    element, and draws tables and charts only once they come into view. So grow the viewport to the
    content first, wait until nothing is a skeleton any more, shoot (`screenshot` or any name -> file
    callable), restore."""
    drawn(page)
    viewport = page.viewport_size
    height = page.evaluate("() => document.querySelector(\"[data-testid='stMain']\").scrollHeight")
    page.set_viewport_size({"width": viewport["width"], "height": max(viewport["height"], min(height, 15_000))})
    try:
        drawn(page)
        screenshot(name)
    finally:
        page.set_viewport_size(viewport)


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def test_every_page_in_the_navigation_opens(page, screenshot):
    nav = page.locator("[data-testid='stSidebarNav']")
    nav.get_by_role("link", name="Classify").wait_for()
    links = nav.get_by_role("link")
    # A link's text is its icon's ligature name, then its title.
    titles = [text.strip().splitlines()[-1].strip() for text in links.all_inner_texts()]
    assert set(REQUIRED) <= set(titles), titles
    assert len(titles) == len(set(titles)), titles

    for index, title in enumerate(titles):
        links.nth(index).click()
        page.get_by_role("heading", name=title).first.wait_for()
        drawn(page)
        assert page.locator("[data-testid='stException']").count() == 0, title
        assert page.get_by_text("Traceback").count() == 0, title
        # The page is the one chosen: its own heading is the first on it.
        assert title in page.locator("h1").first.inner_text()
        capture(page, screenshot, f"page-{slug(title)}")
