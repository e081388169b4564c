"""The app's pages, in one list: app.py navigates over it, pages link to each other through it.

Why the files are called `*_page.py` while the addresses are `/classify`, `/compare`, ...:
Streamlit still honours its old automatic page list when a `pages/` folder sits beside the entry
point. On a fresh server, the first request decides: `/compare` opened first (a bookmark, a
shared link) would run `pages/compare.py` on its own, with Streamlit's raw page list and without
app.py's sidebar, because the old list maps an address to the file of the same name. With no
file named like any address, that lookup finds nothing and falls back to app.py, whose
`st.navigation` then serves the page asked for. tests/unit/test_navigation.py keeps it so.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st


@dataclass(frozen=True)
class PageEntry:
    file: str  # relative to the app's folder
    title: str
    icon: str
    url_path: str


CLASSIFY = PageEntry("pages/classify_page.py", "Classify", ":material/image_search:", "classify")
COMPARE = PageEntry("pages/compare_page.py", "Compare", ":material/compare:", "compare")
FINETUNE = PageEntry("pages/finetune_page.py", "Fine-tune", ":material/model_training:", "finetune")
INSIDE = PageEntry("pages/inside_page.py", "Inside", ":material/account_tree:", "inside")
MODELS = PageEntry("pages/models_page.py", "Models", ":material/menu_book:", "models")

PAGES = (CLASSIFY, COMPARE, FINETUNE, INSIDE, MODELS)
DEFAULT = CLASSIFY


def look_inside(name: str) -> None:
    """A link that opens Inside on model `name` (/inside?model=NAME)."""
    st.page_link(INSIDE.file, label=f"Look inside {name}", icon=INSIDE.icon, query_params={"model": name})


def navigation() -> st.navigation:
    return st.navigation(
        [
            st.Page(page.file, title=page.title, icon=page.icon, url_path=page.url_path, default=page == DEFAULT)
            for page in PAGES
        ]
    )
