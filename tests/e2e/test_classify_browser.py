"""Classify in a real browser: upload a photo, see the answer, download the CSV, survive a bad file."""

from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHELSEA = ROOT / "assets/examples/chelsea.jpg"
COFFEE = ROOT / "assets/examples/coffee.jpg"


def upload(page, *files):
    photos = page.locator("[data-testid='stFileUploader']").filter(has_text="Upload photos")
    photos.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(files)


def test_upload_photo_shows_result_and_csv_downloads(page, screenshot, tmp_path):
    upload(page, str(COFFEE))
    page.get_by_text("espresso ·").first.wait_for()
    page.get_by_text(" ms on CPU").first.wait_for()
    page.locator("[data-testid='stVegaLiteChart']").first.wait_for()
    # The sidebar runs after the page, so it lists the model the page just loaded.
    page.locator("[data-testid='stSidebar']").get_by_text("efficientnet_lite0").wait_for()
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download all top-k rows (CSV)").click()
    csv = Path(download_info.value.path()).read_text()
    assert csv.splitlines()[0] == "file,model,rank,label,probability,latency_ms"
    assert ",efficientnet_lite0,1,espresso," in csv
    screenshot("classify-photo")
    assert page.get_by_text("Traceback").count() == 0


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
