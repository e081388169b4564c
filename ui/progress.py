"""Bridge core's `progress(done, total, message)` callbacks to a Streamlit progress bar."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from core.progress import Progress


@contextmanager
def progress_bar(message: str) -> Iterator[Progress]:
    """A progress bar for the duration of the block; it disappears when the work is done."""
    bar = st.progress(0.0, text=message)

    def update(done: int, total: int, text: str) -> None:
        bar.progress(min(done / total, 1.0) if total else 0.0, text=text)

    try:
        yield update
    finally:
        bar.empty()
