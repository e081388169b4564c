"""Budgets, the Pareto frontier and the recommendation, on hand-made tables (nothing built or timed)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from core.choose.frontier import Budget, choices, on_frontier, recommend, why_nothing_fits, within_budget
from core.choose.table import conform


def _table(rows: list[tuple]) -> pd.DataFrame:
    """(model, runtime, latency_ms, accuracy, size_mb, memory_mb[, status, measured]) rows."""
    records = []
    for row in rows:
        model, runtime, latency, accuracy, size, memory, *rest = row
        status, measured = rest if rest else ("measured", True)
        records.append(
            {
                "model": model,
                "family": model.rstrip("0123456789_"),
                "runtime": runtime,
                "latency_ms": latency,
                "accuracy": accuracy,
                "size_mb": size,
                "memory_mb": memory,
                "status": status,
                "measured": measured,
            }
        )
    return conform(pd.DataFrame(records))


TABLE = _table(
    [
        ("big", "torch", 100.0, 84.0, 300.0, 900.0),
        ("big", "onnx", 80.0, 84.0, 300.0, 700.0),
        ("mid", "torch", 23.1, 77.7, 20.5, 120.0),
        ("mid", "int8", 9.0, 77.0, 6.0, 60.0),
        ("small", "torch", 11.0, 76.8, 6.0, 80.0),
        ("tiny", "torch", 5.0, 60.0, 2.0, 30.0),
        ("slowpoke", "torch", 50.0, 70.0, 40.0, 200.0),  # slower and less accurate than mid: dominated
        ("pred", "onnx", 15.0, 80.0, 30.0, 150.0, "predicted", False),
        ("oom", "torch", 1.0, 99.0, 1.0, 1.0, "skipped", False),  # never a choice, however good it looks
        ("broken", "int8", 1.0, 99.0, 1.0, 1.0, "failed", False),
    ]
)


def test_frontier_exact_members_with_ties_and_duplicates():
    frame = pd.DataFrame(
        {
            "model": ["a", "b", "c", "d", "e", "f", "g"],
            "latency_ms": [10.0, 10.0, 20.0, 20.0, 5.0, 30.0, float("nan")],
            "accuracy": [80.0, 80.0, 85.0, 84.0, 70.0, 85.0, 99.0],
        }
    )
    # a and b are equal (both stay); d is beaten by c; f is as accurate as c but slower; g has no latency
    assert list(frame["model"][on_frontier(frame)]) == ["a", "b", "c", "e"]


def test_frontier_faster_but_equal_accuracy_beats_slower():
    frame = pd.DataFrame({"latency_ms": [10.0, 10.5], "accuracy": [80.0, 80.0]})
    assert on_frontier(frame).tolist() == [True, False]


def test_int8_rows_are_points_of_their_own():
    choosable = TABLE[~TABLE["status"].isin(["skipped", "failed"])]
    frontier = choosable[on_frontier(choosable)]
    points = set(zip(frontier["model"], frontier["runtime"], strict=True))
    assert points == {("big", "onnx"), ("pred", "onnx"), ("mid", "int8"), ("tiny", "torch")}
    assert ("mid", "torch") not in points  # pred is faster and more accurate


def test_within_budget_applies_every_limit_and_drops_skipped_and_failed():
    budget = Budget(max_latency_ms=30, max_size_mb=25, max_memory_mb=130, min_accuracy=70)
    rows = within_budget(TABLE, budget)
    assert set(zip(rows["model"], rows["runtime"], strict=True)) == {
        ("mid", "torch"),
        ("mid", "int8"),
        ("small", "torch"),
    }
    assert not rows["status"].isin(["skipped", "failed"]).any()


def test_runtime_filter_int8_against_any():
    assert set(within_budget(TABLE, Budget(runtime="int8"))["model"]) == {"mid"}  # the failed int8 row is out
    assert set(within_budget(TABLE, Budget(runtime="any"))["model"]) == {
        "big",
        "mid",
        "small",
        "tiny",
        "slowpoke",
        "pred",
    }
    with pytest.raises(ValueError):
        Budget(runtime="tensorrt")


def test_predicted_rows_count_within_budget():
    rows = within_budget(TABLE, Budget(max_latency_ms=20, min_accuracy=79))
    assert rows["model"].tolist() == ["pred"] and not rows["measured"].any()


def test_a_missing_figure_is_not_within_a_limit_on_it():
    table = TABLE.copy()
    table.loc[table["model"].eq("small"), "memory_mb"] = float("nan")
    assert "small" in set(within_budget(table, Budget(max_latency_ms=12))["model"])
    assert "small" not in set(within_budget(table, Budget(max_latency_ms=12, max_memory_mb=1000))["model"])


def test_recommend_order_and_reasons_carry_the_numbers():
    picks = recommend(TABLE, Budget(max_latency_ms=30), count=3)
    assert [(pick.row["model"], pick.row["runtime"]) for pick in picks] == [
        ("pred", "onnx"),
        ("mid", "int8"),
        ("tiny", "torch"),
    ]
    first, second, third = (pick.reason for pick in picks)
    assert first.startswith("The most accurate model within your budget: 80% top-1 at 15 ms")
    assert "(budget 30 ms)" in first and "30 MB" in first
    assert first.endswith("30 MB (latency predicted, not measured yet).")
    assert "3.0 points less accurate than pred" in second and "1.7x faster" in second and "5x smaller" in second
    assert second.endswith("5x smaller, in ONNX Runtime int8.")  # measured: no note
    assert "20.0 points less accurate than pred" in third and "3x faster" in third and "15x smaller" in third


def test_recommend_gives_one_row_per_model_its_fastest_runtime():
    picks = recommend(TABLE, Budget(min_accuracy=83), count=3)
    assert [(pick.row["model"], pick.row["runtime"]) for pick in picks] == [("big", "onnx")]
    assert "ONNX Runtime" in picks[0].reason and "(budget" not in picks[0].reason


def test_recommend_ties_broken_by_latency_then_the_rest_by_accuracy():
    table = _table(
        [
            ("slow", "torch", 30.0, 80.0, 10.0, 10.0),
            ("fast", "torch", 20.0, 80.0, 10.0, 10.0),
            ("worse", "torch", 25.0, 79.0, 10.0, 10.0),  # slower than fast, less accurate: off the frontier
        ]
    )
    picks = recommend(table, Budget(), count=3)
    assert [pick.row["model"] for pick in picks] == ["fast", "slow", "worse"]
    assert picks[1].reason.startswith("As accurate as fast and 1.5x slower")


def test_nothing_fits_returns_empty_and_names_the_latency():
    budget = Budget(max_latency_ms=4)
    assert recommend(TABLE, budget) == []
    assert why_nothing_fits(TABLE, budget) == (
        "The fastest model is tiny in PyTorch at 5 ms, against a budget of 4 ms."
    )


def test_why_nothing_fits_names_accuracy_within_the_latency_budget():
    budget = Budget(max_latency_ms=12, min_accuracy=80)
    text = why_nothing_fits(TABLE, budget)
    assert text == (
        "The most accurate model within your other limits is mid in ONNX Runtime int8 at 77%, against a minimum of 80%."
    )


def test_why_nothing_fits_for_an_empty_runtime_and_missing_figures():
    assert "No model has a latency in ONNX Runtime" in why_nothing_fits(
        TABLE[TABLE["runtime"].ne("onnx")], Budget(runtime="onnx")
    )
    table = TABLE.assign(memory_mb=float("nan"))
    assert "records its memory" in why_nothing_fits(table, Budget(max_memory_mb=500))


def test_choices_json_rows_within_every_limit():
    budget = Budget(max_latency_ms=60, max_size_mb=50, max_memory_mb=250, min_accuracy=65)
    rows = choices(TABLE, budget)
    json.dumps(rows)  # plain Python types only
    assert [(row["model"], row["runtime"]) for row in rows] == [
        ("pred", "onnx"),
        ("mid", "torch"),
        ("mid", "int8"),
        ("small", "torch"),
        ("slowpoke", "torch"),
    ]
    for row in rows:
        assert set(row) == {
            "model",
            "runtime",
            "latency_ms",
            "size_mb",
            "memory_mb",
            "accuracy",
            "measured",
            "on_frontier",
        }
        assert row["latency_ms"] <= 60 and row["size_mb"] <= 50 and row["memory_mb"] <= 250 and row["accuracy"] >= 65
    by_key = {(row["model"], row["runtime"]): row for row in rows}
    assert by_key[("pred", "onnx")]["measured"] is False
    assert by_key[("mid", "int8")]["on_frontier"] is True
    assert by_key[("slowpoke", "torch")]["on_frontier"] is False
    # the frontier is over every usable row of the runtime: big (84%) stays on it though out of budget
    assert by_key[("pred", "onnx")]["on_frontier"] is True


def test_choices_in_one_runtime_computes_its_own_frontier():
    rows = choices(TABLE, Budget(runtime="torch"))
    assert {row["runtime"] for row in rows} == {"torch"}
    on = {row["model"] for row in rows if row["on_frontier"]}
    assert on == {"big", "mid", "small", "tiny"}


def test_budget_describe():
    assert Budget().describe() == "No limits: every model, in any runtime."
    text = Budget(max_latency_ms=30, max_size_mb=25.5, min_accuracy=75, runtime="int8").describe()
    assert text == "At most 30 ms an image, a file of at most 25.5 MB and at least 75% top-1, in ONNX Runtime int8."
