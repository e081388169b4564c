"""No table cell shows the word "None": every table on every page draws missing values empty.

Streamlit draws a missing value (None, NaN) as "None" unless st.dataframe is given a placeholder;
ui.tables.data_table gives it. Each page runs here with a file that fails, so its tables hold
missing values (a failed file's top-1 and latency), and every table's placeholder is checked.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.app.conftest import TIMEOUT, ok, shown
from tests.faces import lfw_pngs
from ui.navigation import COMPARE, FINETUNE, MODELS
from ui.tables import MISSING

ROOT = Path(__file__).resolve().parents[2]
CHELSEA = (ROOT / "assets/examples/chelsea.jpg").read_bytes()
BROKEN = ("broken.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "image/png")


pytestmark = pytest.mark.usefixtures("offline")


def assert_missing_drawn_empty(at: AppTest, at_least: int) -> None:
    assert len(at.dataframe) >= at_least, [element.value.columns.tolist() for element in at.dataframe]
    for element in at.dataframe:
        columns = element.value.columns.tolist()
        assert element.proto.HasField("placeholder"), f"table {columns} draws missing values as 'None'"
        assert element.proto.placeholder == MISSING, columns


def test_classify_tables(app):
    ok(app.file_uploader(key="classify_files").set_value([("chelsea.jpg", CHELSEA, "image/jpeg"), BROKEN]).run())
    summary = app.dataframe[0].value
    assert summary[["top1", "confidence"]].iloc[1].isna().all()  # the failed file's cells (one batch: no latency)
    assert_missing_drawn_empty(app, at_least=2)  # the summary and the photo's top-k


def test_compare_tables(app):
    ok(app.switch_page(COMPARE.file).run())
    ok(app.file_uploader(key="compare_files").set_value([("chelsea.jpg", CHELSEA, "image/jpeg"), BROKEN]).run())
    assert len(app.error) == 1
    assert_missing_drawn_empty(app, at_least=5)  # models, agreement, one top-k per model


def test_models_table():
    at = ok(AppTest.from_file(str(ROOT / MODELS.file), default_timeout=TIMEOUT).run())
    assert_missing_drawn_empty(at, at_least=1)


def test_finetune_tables():
    face, other = lfw_pngs()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for label, images in (("face", face), ("other", other)):
            for i, data in enumerate(images[:10]):
                archive.writestr(f"set/{label}/{i}.png", data)
        archive.writestr("set/face/broken.png", BROKEN[1])
    at = ok(AppTest.from_file(str(ROOT / FINETUNE.file), default_timeout=180).run())
    ok(at.file_uploader(key="finetune_zip").set_value(("set.zip", buffer.getvalue(), "application/zip")).run())
    assert_missing_drawn_empty(at, at_least=3)  # counts, skipped files, the validation split

    ok(at.number_input(key="finetune_epochs").set_value(2).run())
    ok(at.button(key="finetune_train").click().run())
    ok(at.file_uploader(key="finetune_try_files").set_value([("face.png", face[20], "image/png"), BROKEN]).run())
    assert any("broken.png" in shown(error.value) for error in at.error)
    assert_missing_drawn_empty(at, at_least=5)  # ... and per-class metrics, the try-it top-k
