"""Inside in a real browser: opened by its address in a fresh context, in tabs (a short page), resnet50's
table, graph and side by side with no weights on disk, then efficientnet_lite0's stage maps on the
example photo, their tab first."""

import re

import pytest

from tests.e2e.conftest import SCREENSHOTS, fresh_page
from tests.e2e.test_compare_browser import loaded_images
from tests.e2e.test_navigation_browser import capture, drawn

pytestmark = pytest.mark.e2e

SEES = "What each stage sees"


def graph_nodes(page) -> int:
    """Nodes drawn in the SVG st.graphviz_chart rendered in the browser."""
    return page.locator("[data-testid='stGraphVizChart'] svg g.node").count()


def metric(page, value: str):
    return page.locator("[data-testid='stMetricValue']").filter(has_text=value)


def choose(page, label: str, option: str) -> None:
    page.locator("[data-testid='stSelectbox']").filter(has_text=label).first.click()
    page.keyboard.type(option)
    page.get_by_role("option", name=option, exact=True).click()


def tab(page, name: str):
    return page.get_by_role("tab", name=name, exact=True)


def open_tab(page, name: str) -> None:
    tab(page, name).click()
    page.wait_for_function(
        "name => [...document.querySelectorAll('[role=tab]')]"
        ".some(t => t.innerText.trim() === name && t.getAttribute('aria-selected') === 'true')",
        arg=name,
    )
    drawn(page)


def tab_names(page) -> list[str]:
    return [name.strip() for name in page.get_by_role("tab").all_inner_texts()]


def main_height(page) -> int:
    return page.evaluate("() => document.querySelector(\"[data-testid='stMain']\").scrollHeight")


def shooter(page):
    """Screenshots of this test's own page (the `screenshot` fixture shoots the default one)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(name: str):
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


def test_inside_by_address_then_stage_maps(browser, server_url):
    with fresh_page(browser, f"{server_url}/inside?model=resnet50", timeout=90_000) as page:
        page.get_by_role("heading", name="Inside").first.wait_for()
        tab(page, "Stages").wait_for()
        drawn(page)
        assert tab_names(page) == ["Stages", "Graph", "What each stage sees", "Side by side"]
        assert tab(page, "Stages").get_attribute("aria-selected") == "true"
        assert page.locator("[data-testid='stDataFrame']").first.is_visible()
        metric(page, "25.56 M").wait_for()  # resnet50's parameters, no weights needed
        assert main_height(page) < 2500  # the 3,700 px graph and the stage maps wait in their own tabs
        capture(page, shooter(page), "inside-resnet50")

        open_tab(page, "Graph")
        page.wait_for_function(
            "() => document.querySelectorAll(\"[data-testid='stGraphVizChart'] svg g.node\").length > 10"
        )
        assert graph_nodes(page) > 10
        svg = page.locator("[data-testid='stGraphVizChart'] svg")
        assert svg.get_by_text("0: Bottleneck").first.is_visible()
        assert page.locator("[data-testid='stGraphVizChart'] svg g.edge path[stroke-dasharray]").count() > 0  # skips
        assert page.locator("[data-testid='stException']").count() == 0
        assert page.get_by_text("Page not found").count() == 0

        open_tab(page, "Side by side")
        page.locator("[data-testid='stMain'] [data-testid='stVegaLiteChart']").first.wait_for()
        capture(page, shooter(page), "inside-side-by-side")

        choose(page, "Model", "efficientnet_lite0")
        page.wait_for_url(re.compile(r"model=efficientnet_lite0"))
        metric(page, "4.65 M").wait_for()
        open_tab(page, "What each stage sees")
        page.get_by_role("button", name="Try an example").click()
        page.wait_for_function("name => document.querySelector('[role=tab]')?.innerText.trim() === name", arg=SEES)
        assert tab_names(page)[0] == "What each stage sees"  # with a photo, its maps come first, and open
        assert tab(page, "What each stage sees").get_attribute("aria-selected") == "true"
        page.get_by_text(re.compile(r"efficientnet_lite0 sees .+ \(\d+\.\d%\)")).wait_for()
        page.locator("[data-testid='stMarkdown']").get_by_text("9. bn2", exact=True).wait_for()  # the last of 9
        drawn(page)
        page.wait_for_function(
            "n => [...document.querySelectorAll(\"[data-testid='stMain'] [data-testid='stImage'] img\")]"
            ".filter(img => img.complete && img.naturalWidth > 0).length >= n",
            arg=18,
        )
        assert loaded_images(page) == 18  # nine stages: a mean map and a channel grid each
        assert page.locator("[data-testid='stException']").count() == 0
        assert page.get_by_text("Traceback").count() == 0
        capture(page, shooter(page), "inside-stage-maps")
