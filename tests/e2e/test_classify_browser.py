"""Classify in a real browser: survive a bad file in a batch. (A photo, its answer, int8 and the CSV are in
tests/e2e/test_walk_browser.py.)"""

from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHELSEA = ROOT / "assets/examples/chelsea.jpg"


def upload(page, *files):
    photos = page.locator("[data-testid='stFileUploader']").filter(has_text="Upload photos")
    photos.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(files)


def test_bad_file_shows_error_and_page_still_works(page, screenshot, tmp_path):
    bad = tmp_path / "holiday.jpg"
    bad.write_text("<html>not a photo</html>")
    upload(page, str(bad), str(CHELSEA))
    page.get_by_text("holiday.jpg: The file looks like a text/HTML file").wait_for()
    page.get_by_text("1 of 2 images classified").wait_for()
    screenshot("classify-bad-file")
    assert page.get_by_text("Traceback").count() == 0
    # Still usable: adding the examples classifies them alongside, the bad file still reported.
    page.get_by_role("button", name="Try an example").click()
    page.get_by_text("4 of 5 images classified").wait_for()
    assert page.get_by_text("holiday.jpg: The file looks like a text/HTML file").is_visible()
    screenshot("classify-batch")
