"""Every page opened by its address FIRST, on a server nobody has visited yet, in a fresh browser
context: the app's own navigation and sidebar, never Streamlit's raw page list nor its "page not
found" dialog (ui/navigation.py)."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Server, fresh_page, settle
from ui.navigation import DEFAULT, PAGES

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fresh_servers(tmp_path_factory):
    """One new server per page, all started at once (the first request to each is the deep link)."""
    servers = {page.url_path: Server(tmp_path_factory.mktemp(f"fresh-{page.url_path}")) for page in PAGES}
    try:
        yield {address: server.wait() for address, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop()


def nav_titles(page) -> list[str]:
    links = page.locator("[data-testid='stSidebarNav']").get_by_role("link")
    # A link's text is its icon's ligature name, then its title.
    return [text.strip().splitlines()[-1].strip() for text in links.all_inner_texts()]


@pytest.mark.parametrize("entry", PAGES, ids=[page.url_path for page in PAGES])
def test_a_deep_link_opened_first_shows_the_app(browser, fresh_servers, entry):
    # The default page lives at the root; its own name typed in (/classify) leads there too (every other
    # browser test opens the root first).
    address = "" if entry == DEFAULT else entry.url_path
    with fresh_page(browser, f"{fresh_servers[entry.url_path].url}/{entry.url_path}") as page:
        page.get_by_role("heading", name=entry.title).first.wait_for()
        page.get_by_text("This server").wait_for()  # app.py's sidebar ran
        settle(page)
        assert entry.title in page.locator("h1").first.inner_text()
        assert nav_titles(page) == [p.title for p in PAGES]  # the app's titles, not file names
        assert page.locator("[data-testid='stException']").count() == 0
        assert page.get_by_text("does not seem to exist").count() == 0  # Streamlit's "page not found" dialog
        assert page.get_by_role("dialog").count() == 0
        expected = f"{fresh_servers[entry.url_path].url}/{address}".rstrip("/")
        page.wait_for_url(lambda url: url.rstrip("/") == expected)  # /classify: sent on to the root
        assert page.url.rstrip("/") == expected
