"""The Shrink page in a real browser: reached by clicking and by its address; efficientnet_lite0 pruned by half,
the trade drawn and tabled, the pruned variant kept and its .onnx verified in ONNX Runtime, then downloaded."""

import re

import pytest

from tests.e2e.conftest import fresh_page, settle, wait_for_text

pytestmark = pytest.mark.e2e


def keyed(page, key: str):
    return page.locator(f".st-key-{key}")


def test_lite0_pruned_kept_and_downloaded(page, screenshot, tmp_path):
    page.locator("[data-testid='stSidebarNav']").get_by_role("link", name="Shrink").click()
    page.wait_for_url(re.compile(r"/shrink$"))
    page.get_by_role("heading", name="Shrink").first.wait_for()
    settle(page)
    epochs = keyed(page, "shrink_epochs").locator("input")
    epochs.fill("0")  # recovery has its own tests
    epochs.press("Enter")
    settle(page)
    for toggle in ("shrink_int8", "shrink_zeros"):  # the shortest shrink: pruning alone
        keyed(page, toggle).locator("label").click()
        settle(page)
    keyed(page, "shrink_go").locator("button").click()
    wait_for_text(page, "The trade: efficientnet_lite0", timeout=240_000)
    settle(page)
    page.locator("[data-testid='stVegaLiteChart']").first.wait_for()
    page.locator("[data-testid='stDataFrame']").first.wait_for()
    screenshot("shrink")

    keyed(page, "shrink_ship").locator("button").click()
    wait_for_text(page, "Run in ONNX Runtime: the same top-1 as", timeout=120_000)
    settle(page)
    with page.expect_download() as download:
        keyed(page, "shrink_download_onnx").locator("button").click()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    assert saved.suffix == ".onnx" and saved.stat().st_size > 1_000_000
    assert page.get_by_text("Traceback").count() == 0


def test_shrink_by_its_address(browser, server_url):
    with fresh_page(browser, f"{server_url}/shrink") as page:
        page.get_by_role("heading", name="Shrink").first.wait_for()
        page.get_by_text("What to shrink").wait_for()
        page.get_by_text("My fine-tuned model").click()
        wait_for_text(page, "Train a model on Fine-tune first")
        assert page.get_by_text("Traceback").count() == 0
