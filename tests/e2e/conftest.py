"""A real `streamlit run app.py` on a free loopback port, driven by Debian's Chromium through Playwright."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from bench.soak import CHROMIUM_FLAGS
from bench.soak_host import wait_healthy

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-output" / "screenshots"
STARTUP_TIMEOUT_S = 90


def chromium_path() -> str | None:
    return os.environ.get("ZOOSCOPE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _missing_browser(reason: str) -> None:
    # CI sets ZOOSCOPE_REQUIRE_BROWSER so a missing browser fails there instead of skipping.
    if os.environ.get("ZOOSCOPE_REQUIRE_BROWSER"):
        pytest.fail(f"browser tests required but {reason}")
    pytest.skip(f"{reason}; install Debian's chromium package to run the browser tests")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`streamlit run app.py` on a free loopback port, offline, with its own empty torch hub."""

    def __init__(self, folder: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "server.log"
        env = {**os.environ, "ZOOSCOPE_OFFLINE": "1", "TORCH_HOME": str(folder / "torch")}
        command = [
            sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
            "--server.headless=true", f"--server.port={self.port}", "--server.address=127.0.0.1",
            "--server.fileWatcherType=none", "--browser.gatherUsageStats=false",
        ]  # fmt: skip
        with open(self.log, "wb") as output:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)

    def wait(self) -> Server:
        wait_healthy(self.url, self.process, STARTUP_TIMEOUT_S)
        return self

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        print(self.log.read_text(errors="replace")[-3000:])


@pytest.fixture(scope="session")
def bundled_models_in_onnx_runtime():
    """The bundled models exported and checked into the run's ONNX cache (tests/conftest.py) before the app
    starts: the app then opens their sessions at once, as a restarted server would, and a browser test's
    time limit is never spent on a first export (a no-op when earlier tests already made them)."""
    from core.engines.choice import load_handle
    from core.models.bundled import NAMES
    from core.models.keys import ModelKey

    for name in NAMES:
        assert load_handle(ModelKey(name), runtime_choice="onnx").runtime == "onnx", name


@pytest.fixture(scope="session")
def server_url(tmp_path_factory, bundled_models_in_onnx_runtime):
    server = Server(tmp_path_factory.mktemp("streamlit"))
    try:
        yield server.wait().url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def browser():
    executable = chromium_path()
    if executable is None:
        _missing_browser("no Chromium was found")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing_browser("the playwright package is not installed")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


VIEWPORT = {"width": 1400, "height": 1000}


@contextmanager
def fresh_page(browser, url: str, *, timeout: int = 60_000):
    """`url` opened in a browser context of its own (no cookies, no earlier session), as a link opens it."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        page.set_default_timeout(timeout)
        page.goto(url)
        yield page
    finally:
        context.close()


@pytest.fixture
def page(browser, server_url):
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(server_url)
    page.get_by_role("heading", name="Classify").wait_for()
    yield page
    context.close()


def wait_for_text(page, text: str, *, timeout: int = 60_000) -> None:
    """Wait for `text` in the page; on a timeout, fail with what the page shows instead (a place in line,
    an error, a smaller count), so a failure in CI says why."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.get_by_text(text).first.wait_for(timeout=timeout)
    except PlaywrightTimeout:
        shown = page.locator("[data-testid='stMain']").inner_text(timeout=5_000)
        pytest.fail(f"{text!r} did not appear within {timeout / 1000:.0f} s; the page shows:\n{shown[-3000:]}")


def settle(page) -> None:
    """Wait until the script run is over and no element is left over from the previous run."""
    page.wait_for_function(
        "() => !document.querySelector(\"[data-testid='stStatusWidget']\")"
        " && !document.querySelector(\"[data-stale='true']\")"
    )


@pytest.fixture
def screenshot(page):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(name: str) -> Path:
        settle(page)
        path = SCREENSHOTS / f"{name}.png"
        # Streamlit scrolls inside its own container, so "full page" is only the viewport:
        # grow the viewport to the content's height for the picture, then put it back.
        viewport = page.viewport_size
        height = page.evaluate(
            "() => Math.max(...[...document.querySelectorAll(\"[data-testid='stMain'], [data-testid='stSidebar'],"
            " [data-testid='stAppViewContainer']\")].map(e => e.scrollHeight), document.body.scrollHeight)"
        )
        page.set_viewport_size({"width": viewport["width"], "height": min(max(height, viewport["height"]), 8000)})
        try:
            settle(page)
            page.screenshot(path=str(path), full_page=True)
        finally:
            page.set_viewport_size(viewport)
        return path

    return take


def captions_split_mid_word(page) -> list[str]:
    """The image captions in which a word wraps onto two lines ("bear_00.p" / "ng"): each word of each
    caption is measured as a range; a word drawn on two lines has two boxes."""
    return page.evaluate(
        """() => [...document.querySelectorAll("[data-testid='stImageCaption']")].flatMap(caption => {
            const walker = document.createTreeWalker(caption, NodeFilter.SHOW_TEXT);
            const split = [];
            for (let node = walker.nextNode(); node; node = walker.nextNode()) {
                for (const match of node.textContent.matchAll(/\\S+/g)) {
                    const range = document.createRange();
                    range.setStart(node, match.index);
                    range.setEnd(node, match.index + match[0].length);
                    const lines = new Set([...range.getClientRects()].map(box => Math.round(box.top)));
                    if (lines.size > 1) split.push(match[0]);
                }
            }
            return split;
        })"""
    )
