import json
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
def offline(monkeypatch):
    """The bundled models only: no download is tried (a page test's own machine may have network)."""
    monkeypatch.setenv("ZOOSCOPE_OFFLINE", "1")


def ok(at: AppTest) -> AppTest:
    """`at` after a run that raised nothing."""
    assert not at.exception, at.exception
    return at


@pytest.fixture
def app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def shown(markdown: str) -> str:
    """What a person reads from Markdown the app escaped with ui.text.verbatim."""
    return re.sub(r"\\(.)", r"\1", markdown)


def select_on_chart(at: AppTest, key_prefix: str, selection: str, points: list[dict]) -> AppTest:
    """A click on a chart drawn with `on_select`: run the script with the chart's selection as its widget value.

    AppTest can find a chart but has no way to click one, and a chart's selection cannot be set through
    session_state (Streamlit refuses writes to it). So this sends what the browser sends after a click,
    `{"selection": {<selection>: [<point's fields>]}}`, as the chart's widget state; the page's callback
    then runs as it would in the browser (tests/e2e clicks the real chart).
    """
    charts = [chart for chart in at.get("vega_lite_chart") if chart.key and chart.key.startswith(key_prefix)]
    assert len(charts) == 1, f"one chart keyed {key_prefix}*, not {len(charts)}"
    states = at._tree.get_widget_states()
    state = states.widgets.add()
    state.id = charts[0].proto.id
    state.string_value = json.dumps({"selection": {selection: points}})
    return at._run(states)


def chart_key(at: AppTest, key_prefix: str) -> str:
    return next(chart.key for chart in at.get("vega_lite_chart") if chart.key and chart.key.startswith(key_prefix))
