import re
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app.py")
TIMEOUT = 120  # seconds per script run: the first run loads a model on a 2-core machine


@pytest.fixture(autouse=True)
def fresh_streamlit_caches():
    # st.cache_resource is process-global across AppTest instances.
    st.cache_resource.clear()
    st.cache_data.clear()
    yield
    st.cache_resource.clear()
    st.cache_data.clear()


@pytest.fixture
def app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def shown(markdown: str) -> str:
    """What a person reads from Markdown the app escaped with ui.text.verbatim."""
    return re.sub(r"\\(.)", r"\1", markdown)
