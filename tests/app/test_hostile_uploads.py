"""The whole hostile corpus (tests/hostile.py) in one batch with a real photo, on Classify and Compare.

Each bad file must get exactly one st.error naming it with a one-line reason, every other file
its result, the real photo its right answer, and the page no exception.
"""

from __future__ import annotations

import re

import pandas as pd
import pytest

from core.classify.predict import Classification
from core.images import decode_image, thumbnail
from tests import hostile
from tests.hostile import EXIF_NAME, EXIF_UPRIGHT_SIZE, MARKDOWN_NAME, ODD_NAME, SLIVER_NAME, markdown_literal
from ui.navigation import COMPARE

COFFEE = ("coffee.jpg", hostile.example("coffee.jpg"), "image/jpeg")
LITE = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
CASES = hostile.corpus()
BAD = [case for case in CASES if case.expect == "error"]
GOOD = [case for case in CASES if case.expect == "ok"]
BATCH = [COFFEE, *(case.upload() for case in CASES)]


pytestmark = pytest.mark.usefixtures("offline")


def test_the_corpus_is_what_the_issue_lists():
    assert len(CASES) == 19 and len(BAD) == 10 and len(GOOD) == 9
    names = [case.name for case in CASES]
    assert len(set(names)) == len(names)
    # No name inside another, so "the error naming it" is never ambiguous.
    assert not [(a, b) for a in names for b in names if a != b and a in b]
    for case in GOOD:  # the decoded image is what each odd input should become
        case.check(decode_image(case.data))


def upload(app, key: str):
    app.file_uploader(key=key).set_value(BATCH).run()
    assert not app.exception, app.exception
    return app


def named_errors(app) -> dict[str, list[str]]:
    """File name as a person reads it -> the reasons shown for it, from "**name**: reason" errors."""
    named: dict[str, list[str]] = {}
    for error in app.error:
        match = re.fullmatch(r"\*\*(.+?)(?<!\\)\*\*: (.*)", error.value, flags=re.DOTALL)
        assert match, error.value
        name = markdown_literal(match.group(1))
        assert name is not None, f"the name in {error.value!r} would render as Markdown, not as typed"
        named.setdefault(name, []).append(match.group(2))
    return named


def assert_one_error_per_bad_file(app) -> None:
    named = named_errors(app)
    assert sorted(named) == sorted(case.name for case in BAD), named
    for case in BAD:
        assert len(named[case.name]) == 1, (case.name, named[case.name])
        reason = named[case.name][0]
        assert "\n" not in reason and "Traceback" not in reason and "Error" not in reason, reason
        assert reason.endswith(".") and 10 < len(reason) < 200, reason
        for word in case.words:
            assert word in reason, (case.name, reason)


def frame_with(app, column: str):
    return next(element.value for element in app.dataframe if column in element.value.columns)


def check_thumbnails(thumbnails: dict) -> None:
    """What the page keeps to show each accepted file: the decoded image, shrunk, EXIF applied."""
    assert thumbnails[EXIF_NAME].size == EXIF_UPRIGHT_SIZE  # landscape, as a person holds the photo
    for case in GOOD:
        expected = thumbnail(decode_image(case.data)).size
        assert thumbnails[case.name].size == expected, case.name
        assert max(thumbnails[case.name].size) <= 512


def test_classify_page_survives_the_whole_corpus_in_one_batch(app, lite0):
    upload(app, "classify_files")
    assert_one_error_per_bad_file(app)
    assert any(f"{len(GOOD) + 1} of {len(BATCH)} images classified" in h.value for h in app.subheader)

    summary = frame_with(app, "top1")
    assert list(summary["file"]) == [name for name, _, _ in BATCH]  # every file, in order, names verbatim
    rows = summary.set_index("file")
    assert rows.loc["coffee.jpg", "top1"] == "espresso"
    for case in GOOD:
        assert rows.loc[case.name, "top1"], case.name
        assert rows.loc[case.name, "error"] == "", case.name
    for case in BAD:
        assert pd.isna(rows.loc[case.name, "top1"]) and rows.loc[case.name, "error"], case.name

    results = {r.file: r for r in app.session_state["classify_last"][1] if isinstance(r, Classification)}
    check_thumbnails({name: result.thumbnail for name, result in results.items()})
    assert results[EXIF_NAME].top1.label in {"tabby", "tiger cat", "Egyptian cat"}
    # The odd name is a label, not a path: the rocket under it gets the rocket's own answer.
    from core.classify.predict import classify_files

    (rocket,) = classify_files(lite0, [("rocket.jpg", hostile.example("rocket.jpg"))])
    # (Batched with others vs alone: the same ranking, probabilities equal to float rounding.)
    assert [p.label for p in results[ODD_NAME].predictions] == [p.label for p in rocket.predictions]
    assert [p.probability for p in results[ODD_NAME].predictions] == pytest.approx(
        [p.probability for p in rocket.predictions], abs=1e-5
    )
    assert results[SLIVER_NAME].top1.probability > 0
    captions = [caption for image in app.get("image") for caption in image.proto.imgs for caption in [caption.caption]]
    assert ODD_NAME in captions and "coffee.jpg" in captions

    csv_rows = app.get("download_button")
    assert csv_rows, "the CSV of the classified files is offered"


def test_compare_page_lists_the_errors_and_compares_the_rest(app):
    app.switch_page(COMPARE.file).run()
    assert not app.exception, app.exception
    assert app.multiselect(key="compare_models").values == LITE
    upload(app, "compare_files")
    assert_one_error_per_bad_file(app)

    assert list(frame_with(app, "latency_ms")["model"]) == LITE
    agreement = frame_with(app, "consensus")
    assert list(agreement["file"]) == ["coffee.jpg", *(case.name for case in GOOD)]
    by_file = agreement.set_index("file")
    assert by_file.loc["coffee.jpg", "consensus"] == "espresso"
    assert all(by_file.loc["coffee.jpg", name] == "espresso" for name in LITE)
    assert by_file.loc[EXIF_NAME, "consensus"] in {"tabby", "tiger cat", "Egyptian cat"}

    comparison = app.session_state["compare_last"][1]
    assert [failure.file for failure in comparison.failures] == [case.name for case in BAD]
    check_thumbnails({image.file: image.thumbnail for image in comparison.images})
    headings = [m.value.removeprefix("#### ") for m in app.main.markdown if m.value.startswith("#### ")]
    assert [markdown_literal(heading) for heading in headings] == ["coffee.jpg", *(case.name for case in GOOD)]
    assert MARKDOWN_NAME in named_errors(app)


def test_explain_on_the_sliver_does_not_blow_up(app):
    """Grad-CAM resizes like the weights' transforms: a 60000x1 image must be cut to its centre first."""
    app.switch_page(COMPARE.file).run()
    app.multiselect(key="compare_models").set_value(["efficientnet_lite0"]).run()
    sliver = next(case for case in CASES if case.name == SLIVER_NAME)
    app.file_uploader(key="compare_files").set_value([sliver.upload()]).run()
    app.toggle(key="compare_explain").set_value(True).run()
    assert not app.exception, app.exception
    assert not app.error
    assert any(caption.value.startswith("efficientnet_lite0: ") for caption in app.caption)
