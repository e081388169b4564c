"""Every table in the app goes through ui.tables.data_table (missing values drawn empty, never "None")."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HELPER = ROOT / "ui" / "tables.py"
# Streamlit calls that draw a table: on st or on any container (columns, expanders, st.empty()).
TABLE_CALLS = {"dataframe", "data_editor", "table"}


def app_sources() -> list[Path]:
    return [ROOT / "app.py", *sorted((ROOT / "pages").rglob("*.py")), *sorted((ROOT / "ui").rglob("*.py"))]


def table_calls(source: str) -> list[tuple[int, str]]:
    """(line, call) of every `x.dataframe(...)`-like call in `source`."""
    return [
        (node.lineno, ast.unparse(node.func))
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in TABLE_CALLS
    ]


def test_no_page_draws_a_table_except_through_the_helper():
    offenders = [
        f"{path.relative_to(ROOT)}:{line} {call}"
        for path in app_sources()
        if path != HELPER
        for line, call in table_calls(path.read_text())
    ]
    assert offenders == [], "draw tables with ui.tables.data_table, which shows missing values empty"
    assert [call for _, call in table_calls(HELPER.read_text())] == ["container.dataframe"]


def test_the_check_finds_direct_calls_on_st_and_on_containers():
    source = "import streamlit as st\nleft, right = st.columns(2)\nst.dataframe(x)\nleft.dataframe(y)\nst.table(z)\n"
    assert table_calls(source) == [(3, "st.dataframe"), (4, "left.dataframe"), (5, "st.table")]
