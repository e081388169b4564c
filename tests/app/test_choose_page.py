"""The Choose page through Streamlit's AppTest: budgets in, recommendations, map and table out, from this
machine's measurements (a cache of made-up rows) or from another device's table."""

from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.choose.table import conform
from tests.app.conftest import TIMEOUT, ok
from tests.choose_tables import MODELS, fake_table, latency_ms, write_cache
from ui.navigation import CHOOSE

PAGE = str(Path(__file__).resolve().parents[2] / CHOOSE.file)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("ZOOSCOPE_CACHE_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def choose(cache) -> AppTest:
    write_cache(cache, fake_table())
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    return ok(at.run())


def recommended(at: AppTest) -> list[str]:
    """The recommended models' names, in order ("**1. resnet50** · PyTorch")."""
    heads = [m.value for m in at.markdown if m.value.startswith("**") and ". " in m.value]
    return [head.split(". ", 1)[1].split("**", 1)[0] for head in heads]


def rows(at: AppTest) -> pd.DataFrame:
    (frame,) = [element.value for element in at.dataframe]
    return frame


def charts(at: AppTest) -> list:
    return at.get("arrow_vega_lite_chart") + at.get("vega_lite_chart")


def test_no_budget_recommends_the_most_accurate_and_draws_every_model(choose):
    assert choose.title[0].value == "Choose"
    assert any(f"{len(MODELS)} of " in caption.value and "measured here" in caption.value for caption in choose.caption)
    assert len(charts(choose)) == 1
    frame = rows(choose)
    assert len(frame) > len(MODELS)  # the catalogue's other models, predicted
    assert set(frame.loc[frame["measured"], "model"]) == set(MODELS)
    assert recommended(choose)[0] == frame.iloc[0]["model"]
    assert frame["accuracy"].is_monotonic_decreasing


def test_a_latency_budget_keeps_only_what_fits_and_says_why(choose):
    budget = float(round(latency_ms("resnet18")) + 1)
    ok(choose.number_input(key="choose_latency").set_value(budget).run())
    frame = rows(choose)
    assert len(frame) > 0 and (frame["latency_ms"] <= budget).all()
    measured = frame[frame["measured"]]
    best = measured.sort_values("accuracy", ascending=False).iloc[0]["model"]
    picks = recommended(choose)
    assert len(picks) == 3
    if frame.iloc[0]["measured"]:
        assert picks[0] == best
    reasons = [m.value for m in choose.markdown if "budget" in m.value]
    assert any(f"(budget {budget:g} ms)" in reason for reason in reasons), reasons


def test_a_budget_nothing_meets_names_the_tight_limit(choose):
    ok(choose.number_input(key="choose_latency").set_value(0.5).run())
    ok(choose.number_input(key="choose_accuracy").set_value(99.0).run())
    assert recommended(choose) == []
    (warning,) = choose.warning
    assert "%" in warning.value or "ms" in warning.value
    assert rows(choose).empty


def test_a_runtime_not_measured_here_says_so_instead_of_guessing(choose):
    ok(choose.selectbox(key="choose_runtime").set_value("int8").run())
    assert recommended(choose) == []
    assert any("int8" in warning.value for warning in choose.warning)


def test_another_devices_table_is_chosen_from(choose):
    device = fake_table(models=("mobilenet_v3_small", "resnet18", "resnet50", "vit_b_16")).assign(
        latency_ms=[1.0, 2.0, 3.0, 400.0], cpu_model="Raspberry Pi 5"
    )
    ok(choose.radio(key="choose_source").set_value("Another device (a table you load)").run())
    assert any("bench-models" in info.value for info in choose.info)
    ok(
        choose.file_uploader(key="choose_table")
        .set_value([("pi.csv", conform(device).to_csv(index=False).encode(), "text/csv")])
        .run()
    )
    ok(choose.number_input(key="choose_latency").set_value(5.0).run())
    assert recommended(choose)[0] == "resnet50"  # that device's own figures, not this machine's
    frame = rows(choose)
    assert (frame["latency_ms"] <= 5.0).all()
    assert "vit_b_16" not in set(frame["model"])


def test_a_file_that_is_no_table_is_a_message(choose):
    ok(choose.radio(key="choose_source").set_value("Another device (a table you load)").run())
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
    ok(choose.file_uploader(key="choose_table").set_value([("photo.csv", png, "text/csv")]).run())
    (error,) = choose.error
    assert "photo.csv" in error.value
    assert not choose.dataframe


def test_measuring_the_short_list_goes_through_the_line_and_fills_the_table(cache, monkeypatch):
    import core.choose.bench_models as bench_models
    from core.choose.measure import base_row

    measured: list[str] = []

    def fake_measure(spec, runtimes, machine, settings=None):
        measured.append(spec.name)
        return [
            base_row(spec, runtime, machine) | {"status": "measured", "reason": "", "measured": True,
                                                "latency_ms": latency_ms(spec.name), "size_mb": spec.file_size_mb,
                                                "memory_mb": 50.0}
            for runtime in runtimes
        ]  # fmt: skip

    monkeypatch.setattr(bench_models, "measure_model", fake_measure)
    at = ok(AppTest.from_file(PAGE, default_timeout=TIMEOUT).run())
    assert not at.dataframe[0].value["measured"].any() if at.dataframe else True
    ok(at.button(key="choose_measure_short").click().run())
    assert len(measured) >= 10
    frame = rows(at)
    assert frame["measured"].sum() >= 10
    picks = set(recommended(at))
    assert picks and picks <= set(frame.loc[frame["measured"], "model"])  # the recommended ones were measured
