"""Three people at once on one server: three browser contexts upload different photos nearly together.

Each must see its own photo's answer and nothing of the others' (no result, no file name).
"""

import re
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import SCREENSHOTS, VIEWPORT
from tests.e2e.test_navigation_browser import capture, drawn, photo_input

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = {name: ROOT / "assets/examples" / f"{name}.jpg" for name in ("coffee", "chelsea", "rocket")}
CATS = "tabby|tiger cat|Egyptian cat"
LATENCY = re.compile(r" ms per photo with preprocessing, on (CPU|CUDA)")  # each result card's caption


@pytest.fixture(scope="module")
def rocket_top1() -> str:
    """What the bundled model says for the rocket, asked of the engine directly."""
    from core.classify.predict import classify_files
    from core.models.loading import load_model

    (result,) = classify_files(load_model("efficientnet_lite0"), [("rocket.jpg", PHOTOS["rocket"].read_bytes())])
    return result.top1.label


@pytest.fixture
def people(browser, server_url):
    contexts = [browser.new_context(viewport=VIEWPORT) for _ in PHOTOS]
    pages = {}
    for name, context in zip(PHOTOS, contexts, strict=True):
        page = context.new_page()
        page.set_default_timeout(90_000)
        page.goto(server_url)
        pages[name] = page
    for page in pages.values():
        page.get_by_role("heading", name="Classify").wait_for()
        drawn(page)
    yield pages
    for context in contexts:
        context.close()


def test_three_sessions_each_see_only_their_own_result(people, rocket_top1):
    # Start every upload before waiting for any answer: the three script runs overlap on the server.
    started = time.monotonic()
    for name, page in people.items():
        photo_input(page).set_input_files(str(PHOTOS[name]))
    assert time.monotonic() - started < 10  # all three sent before any answer could be awaited

    expected = {"coffee": "espresso", "chelsea": CATS, "rocket": re.escape(rocket_top1)}
    for name, page in people.items():
        page.get_by_text(re.compile(rf"^({expected[name]}) · \d+\.\d%$")).wait_for()
        page.get_by_text(LATENCY).first.wait_for()
        drawn(page)

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for name, page in people.items():
        main = page.locator("[data-testid='stMain']")
        text = main.inner_text()
        assert f"{name}.jpg" in text
        others = [f"{other}.jpg" for other in PHOTOS if other != name]
        assert not [other for other in others if other in text], (name, text)
        assert main.get_by_text(LATENCY).count() == 1, name  # one result card: its own
        assert main.get_by_text(re.compile(rf"^({expected[name]}) · ")).count() == 1, name
        wrong = "|".join(expected[other] for other in PHOTOS if other != name)
        assert main.get_by_text(re.compile(rf"^({wrong}) · \d")).count() == 0, name
        assert page.locator("[data-testid='stException']").count() == 0
        capture(
            page, lambda shot, page=page: page.screenshot(path=str(SCREENSHOTS / f"{shot}.png")), f"sessions-{name}"
        )
