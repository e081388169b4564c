"""The app's pages, in one list, and the guard that keeps every address on the app.

Streamlit still honours its old automatic page list when a `pages/` folder sits beside the entry
point: on a fresh server, the first request decides which list serves it. `/compare` opened
first (a bookmark, a shared link) makes Streamlit run `pages/compare.py` on its own, from that
old list: its raw page names in the sidebar, and none of app.py (no sidebar of ours, no page
config). So every page calls `ensure_app()` before drawing anything: run on its own by the old
list, it runs app.py instead, whose `st.navigation` takes over for good and serves the page that
was asked for (this same file, now inside the app). tests/unit/test_navigation.py checks that
every page calls it; tests/e2e/test_deep_links_browser.py opens every address first on a fresh
server.
"""

from __future__ import annotations

import contextlib
import contextvars
import runpy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
from streamlit.navigation.page import StreamlitPage
from streamlit.runtime.scriptrunner import get_script_run_ctx

APP = Path(__file__).resolve().parent.parent / "app.py"


@dataclass(frozen=True)
class PageEntry:
    file: str  # relative to the app's folder
    title: str
    icon: str
    url_path: str


CLASSIFY = PageEntry("pages/classify.py", "Classify", ":material/image_search:", "classify")
COMPARE = PageEntry("pages/compare.py", "Compare", ":material/compare:", "compare")
FINETUNE = PageEntry("pages/finetune.py", "Fine-tune", ":material/model_training:", "finetune")
INSIDE = PageEntry("pages/inside.py", "Inside", ":material/account_tree:", "inside")
FEATURES = PageEntry("pages/features.py", "Features", ":material/scatter_plot:", "features")
CHOOSE = PageEntry("pages/choose.py", "Choose", ":material/tune:", "choose")
SHRINK = PageEntry("pages/shrink.py", "Shrink", ":material/compress:", "shrink")
MODELS = PageEntry("pages/models.py", "Models", ":material/menu_book:", "models")

PAGES = (CLASSIFY, COMPARE, FINETUNE, INSIDE, FEATURES, CHOOSE, SHRINK, MODELS)
DEFAULT = CLASSIFY

# Set while app.py's navigation runs a page (each script run has its own thread, so its own context).
_inside_app: contextvars.ContextVar[bool] = contextvars.ContextVar("zooscope_inside_app", default=False)


def link_to(page: PageEntry, label: str, query_params: dict[str, str] | None = None) -> None:
    """A link to `page` (with its address's query); none where a page runs on its own (a test of the
    page file), with no navigation to link through."""
    if _inside_app.get():
        st.page_link(page.file, label=label, icon=page.icon, query_params=query_params)


def look_inside(name: str) -> None:
    """A link that opens Inside on model `name` (/inside?model=NAME)."""
    link_to(INSIDE, f"Look inside {name}", {"model": name})


# Streamlit serves the default page at the root and nowhere else, so its own name typed into the
# address bar (/classify) would be "page not found". A hidden page holds that name and sends the
# visitor to the root; the default page's st.Page takes this other name, an inner key only (two
# pages may not share one, and a default page's own name is never an address).
DEFAULT_INNER_NAME = "home"


def _to_default_page() -> None:
    st.switch_page(DEFAULT.file)


def navigation() -> StreamlitPage:
    pages = [
        st.Page(
            page.file,
            title=page.title,
            icon=page.icon,
            url_path=DEFAULT_INNER_NAME if page == DEFAULT else page.url_path,
            default=page == DEFAULT,
        )
        for page in PAGES
    ]
    by_name = st.Page(_to_default_page, title=DEFAULT.title, url_path=DEFAULT.url_path, visibility="hidden")
    return st.navigation([*pages, by_name])


@contextlib.contextmanager
def inside_app() -> Iterator[None]:
    """app.py runs its navigation in here: pages run within know they are in the app."""
    token = _inside_app.set(True)
    try:
        yield
    finally:
        _inside_app.reset(token)


def ensure_app() -> None:
    """The first call of every page: where Streamlit's old page list ran this page without app.py,
    run app.py (it serves this page) and end this run. Anywhere else, nothing happens: inside the
    app, or where the page is the script being run (a test running the page file alone)."""
    if _inside_app.get():
        return
    ctx = get_script_run_ctx()
    if ctx is None or Path(ctx.main_script_path).resolve() != APP:
        return
    runpy.run_path(str(APP), run_name="__main__")
    st.stop()
