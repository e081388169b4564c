"""Deep links stay on the app: no file in pages/ may be named like an address the app serves.

Streamlit's old automatic page list (a `pages/` folder beside the entry point) maps an address to
the file of the same name; on a fresh server a deep link opened first would run that file without
app.py. ui/navigation.py explains; tests/e2e/test_deep_links_browser.py checks it in a browser.
"""

from __future__ import annotations

import re
from pathlib import Path

from ui.navigation import DEFAULT, PAGES

ROOT = Path(__file__).resolve().parents[2]


def old_style_address(file: Path) -> str:
    """The address Streamlit's automatic page list gives a file in pages/: its name without a
    leading number and separator (`1_Classify.py` -> `Classify`), compared case-insensitively."""
    return re.sub(r"^[0-9]+[_ -]*", "", file.stem).replace(" ", "_").lower()


def test_no_page_file_is_named_like_an_address():
    addresses = {page.url_path.lower() for page in PAGES} | {""}
    clashes = [f.name for f in (ROOT / "pages").glob("*.py") if old_style_address(f) in addresses]
    assert clashes == []


def test_every_page_file_is_in_the_navigation_and_every_entry_exists():
    files = {f"pages/{f.name}" for f in (ROOT / "pages").glob("*.py") if f.name != "__init__.py"}
    assert files == {page.file for page in PAGES}


def test_addresses_and_titles_are_unique():
    assert len({page.url_path for page in PAGES}) == len(PAGES)
    assert len({page.title for page in PAGES}) == len(PAGES)
    assert DEFAULT in PAGES
