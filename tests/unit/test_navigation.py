"""Deep links stay on the app: every page file calls ui.navigation.ensure_app() before anything else.

Streamlit's old automatic page list (a `pages/` folder beside the entry point) runs a page file on
its own when a deep link is the first request a server sees; ui/navigation.py explains, and
tests/e2e/test_deep_links_browser.py checks it in a browser on fresh servers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ui.navigation import DEFAULT, PAGES

ROOT = Path(__file__).resolve().parents[2]
PAGE_FILES = sorted((ROOT / "pages").glob("*.py"))


def first_statement_after_imports(path: Path) -> ast.stmt:
    body = ast.parse(path.read_text()).body
    rest = [
        node
        for node in body
        if not isinstance(node, ast.Import | ast.ImportFrom)
        and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))  # the docstring
    ]
    return rest[0]


@pytest.mark.parametrize("path", PAGE_FILES, ids=[path.stem for path in PAGE_FILES])
def test_every_page_calls_ensure_app_first(path: Path):
    first = first_statement_after_imports(path)
    assert isinstance(first, ast.Expr) and isinstance(first.value, ast.Call), ast.dump(first)
    assert ast.unparse(first.value) == "ensure_app()"


def test_every_page_file_is_in_the_navigation_and_every_entry_exists():
    assert {f"pages/{path.name}" for path in PAGE_FILES} == {page.file for page in PAGES}


def test_addresses_and_titles_are_unique():
    assert len({page.url_path for page in PAGES}) == len(PAGES)
    assert len({page.title for page in PAGES}) == len(PAGES)
    assert DEFAULT in PAGES
