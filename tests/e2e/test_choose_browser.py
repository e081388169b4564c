"""The Choose page in a real browser: reached by clicking and by its address; a budget in, the models
that fit out, from this machine's measurements and from another device's table."""

import os
import re
from pathlib import Path

import pytest

from core.choose.table import conform
from tests.choose_tables import fake_table, write_cache
from tests.e2e.conftest import settle

pytestmark = pytest.mark.e2e


def open_choose_by_clicking(page) -> None:
    nav = page.locator("[data-testid='stSidebarNav']")
    nav.get_by_role("link", name="Choose").click()
    page.wait_for_url(re.compile(r"/choose$"))
    page.get_by_role("heading", name="Choose").wait_for()


def set_budget(page, label: str, value: str) -> None:
    box = page.get_by_label(label)
    box.fill(value)
    box.press("Enter")
    settle(page)


def test_a_budget_on_this_machine_gives_recommendations_map_and_table(page, screenshot):
    write_cache(Path(os.environ["ZOOSCOPE_CACHE_DIR"]), fake_table())  # what the server reads as measured here
    open_choose_by_clicking(page)
    page.get_by_text(re.compile(r"\d+ of \d+ models measured here")).wait_for()
    set_budget(page, "Latency at most (ms)", "20")
    page.get_by_text(re.compile(r"The most accurate model within your budget: .* \(budget 20 ms\)")).wait_for()
    page.locator("[data-testid='stVegaLiteChart']").first.wait_for()
    page.locator("[data-testid='stDataFrame']").first.wait_for()
    screenshot("choose")
    assert page.get_by_text("Traceback").count() == 0


def test_another_devices_table_by_address(browser, server_url, tmp_path):
    from tests.e2e.conftest import fresh_page

    device = fake_table(models=("mobilenet_v3_small", "resnet18", "resnet50", "vit_b_16")).assign(
        latency_ms=[1.0, 2.0, 3.0, 400.0]
    )
    table = tmp_path / "pi.csv"
    conform(device).to_csv(table, index=False)
    with fresh_page(browser, f"{server_url}/choose") as page:
        page.get_by_role("heading", name="Choose").wait_for()
        page.get_by_text("Another device (a table you load)").click()
        settle(page)
        uploader = page.locator("[data-testid='stFileUploader']")
        uploader.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(str(table))
        settle(page)
        set_budget(page, "Latency at most (ms)", "5")
        page.get_by_text("1. resnet50").wait_for()
        assert page.get_by_text("vit_b_16").count() == 0
        assert page.get_by_text("Traceback").count() == 0
