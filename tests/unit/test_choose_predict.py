"""The latency model on synthetic tables: fits, leave-one-out errors, predicted rows (nothing built or timed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.choose.predict import (
    catalogue_frame,
    fit_latency_model,
    leave_one_out_errors,
    median_leave_out_error,
    with_predictions,
)
from core.choose.table import COLUMNS, conform

# per-family cost of a GFLOP, in ms (resnet-like, mobile-like, vit-like)
FACTORS = {"resnet": 25.0, "mobilenet_v3": 45.0, "vit": 30.0}
GFLOPS = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0)


def _rows(factors: dict[str, float] = FACTORS, gflops=GFLOPS, runtime: str = "torch", overhead: float = 0.0):
    """One measured row per family and GFLOPS figure: latency = factor x (GFLOPS + overhead)."""
    records = [
        {
            "model": f"{family}_{index}",
            "family": family,
            "runtime": runtime,
            "status": "measured",
            "measured": True,
            "gflops": work,
            "params_m": 5.0 * work,
            "input_size": 224,
            "accuracy": 70.0 + index,
            "latency_ms": factor * (work + overhead),
            "machine": "box",
            "threads": 2,
        }
        for family, factor in factors.items()
        for index, work in enumerate(gflops)
    ]
    return conform(pd.DataFrame(records))


def _catalogue(table: pd.DataFrame, extra: list[dict] | None = None) -> pd.DataFrame:
    columns = ["model", "family", "params_m", "gflops", "accuracy", "input_size"]
    frame = pd.concat([table[columns].drop_duplicates("model"), pd.DataFrame(extra or [])], ignore_index=True)
    return frame.assign(fp32_size_mb=frame["params_m"] * 4, int8_size_mb=frame["params_m"] * 1.1)


def test_latency_proportional_to_gflops_per_family_is_learnt():
    table = _rows(overhead=0.1)
    errors = leave_one_out_errors(table, "torch")
    assert list(errors.columns) == ["model", "measured_ms", "predicted_ms", "relative_error"]
    assert len(errors) == len(table)
    assert errors["relative_error"].max() < 0.08  # not 0: the ridge penalty shrinks each family's offset a little
    assert median_leave_out_error(table, "torch") == pytest.approx(errors["relative_error"].median())
    model = fit_latency_model(table, "torch")
    assert model is not None and model.count == len(table)
    new = pd.DataFrame({"family": ["resnet"], "gflops": [16.0], "params_m": [80.0], "input_size": [224]})
    assert model.predict(new)[0] == pytest.approx(25.0 * 16.1, rel=0.05)  # extrapolates in proportion


def test_too_few_rows_no_fit_and_other_rows_do_not_count():
    table = _rows({"resnet": 25.0}, gflops=(1.0, 2.0))
    assert fit_latency_model(table, "torch") is None
    assert median_leave_out_error(table, "torch") is None
    # skipped, failed and predicted rows, and rows of another runtime, are not measurements
    others = _rows({"resnet": 25.0}, gflops=(3.0, 4.0, 5.0)).assign(model=["x", "y", "z"])
    others["status"] = ["skipped", "failed", "predicted"]
    others["measured"] = False
    onnx = _rows({"resnet": 25.0}, gflops=(3.0, 4.0, 5.0), runtime="onnx")
    assert fit_latency_model(pd.concat([table, others, onnx], ignore_index=True), "torch") is None
    assert fit_latency_model(onnx, "onnx") is not None


def test_a_family_measured_once_is_pulled_toward_the_global_fit():
    table = _rows({"resnet": 25.0, "vit": 25.0})
    lone = _rows({"mobilenet_v3": 75.0}, gflops=(1.0,))
    model = fit_latency_model(pd.concat([table, lone], ignore_index=True), "torch")
    assert model is not None
    probe = pd.DataFrame(
        {
            "family": ["mobilenet_v3", "resnet", "squeezenet"],
            "gflops": [2.0] * 3,
            "params_m": [5.0] * 3,
            "input_size": [224] * 3,
        }
    )
    lone_family, known, unseen = model.predict(probe)
    assert known == pytest.approx(50.0, rel=0.15)
    assert known < lone_family < 150.0  # above the others, but not all the way to its one measurement's 3x
    assert unseen == pytest.approx(known, rel=0.25)  # a family never measured gets the global fit
    assert np.isnan(model.predict(probe.assign(gflops=[np.nan, 1.0, 1.0]))[0])  # no GFLOPS, no prediction


def test_with_predictions_marks_predicted_rows_and_never_touches_measured_ones():
    table = _rows()
    skipped = table.iloc[[0]].assign(model="big", status="skipped", reason="too big for the memory left",
                                     measured=False, latency_ms=np.nan, gflops=30.0)  # fmt: skip
    table = conform(pd.concat([table, skipped], ignore_index=True))
    extra = [
        {"model": "newcomer", "family": "resnet", "params_m": 11.0, "gflops": 1.5, "accuracy": 72.0, "input_size": 224},
        {"model": "big", "family": "resnet", "params_m": 150.0, "gflops": 30.0, "accuracy": 84.0, "input_size": 224},
    ]
    catalogue = _catalogue(table, extra)
    out = with_predictions(table, catalogue, ["torch", "int8"])
    assert list(out.columns) == list(COLUMNS)

    measured = out[out["status"].eq("measured")].reset_index(drop=True)
    pd.testing.assert_frame_equal(measured, table[table["status"].eq("measured")].reset_index(drop=True))

    new = out[out["model"].eq("newcomer")].iloc[0]
    assert (new["runtime"], new["status"], bool(new["measured"])) == ("torch", "predicted", False)
    assert new["reason"] == f"predicted from {len(_rows())} measured models"
    assert new["latency_ms"] == pytest.approx(25.0 * 1.5, rel=0.1)
    assert new["size_mb"] == pytest.approx(44.0) and new["memory_mb"] > 11.0 * 4
    assert (new["machine"], new["threads"]) == ("box", 2)  # predicted for the machine that measured

    big = out[out["model"].eq("big")]
    assert len(big) == 1  # the skipped row gets a latency, not a predicted twin
    assert (big["status"].iloc[0], big["reason"].iloc[0]) == ("skipped", "too big for the memory left")
    assert not big["measured"].iloc[0] and big["latency_ms"].iloc[0] == pytest.approx(25.0 * 30, rel=0.15)

    assert not out["runtime"].eq("int8").any()  # no int8 measurements: nothing to predict int8 from


def test_with_predictions_is_idempotent_and_updates_with_new_measurements():
    table = _rows()
    catalogue = _catalogue(table, [{"model": "newcomer", "family": "vit", "params_m": 11.0, "gflops": 3.0,
                                    "accuracy": 72.0, "input_size": 224}])  # fmt: skip
    once = with_predictions(table, catalogue, ["torch"])
    pd.testing.assert_frame_equal(with_predictions(once, catalogue, ["torch"]), once)
    assert len(once) == len(table) + 1

    measured = table.iloc[[0]].assign(model="newcomer", family="vit", gflops=3.0, latency_ms=123.0)
    later = with_predictions(pd.concat([once, measured], ignore_index=True), catalogue, ["torch"])
    row = later[later["model"].eq("newcomer")]
    assert len(row) == 1 and row["status"].iloc[0] == "measured" and row["latency_ms"].iloc[0] == 123.0


def test_int8_predicted_rows_are_sized_as_int8():
    table = _rows(runtime="int8")
    catalogue = _catalogue(table, [{"model": "newcomer", "family": "resnet", "params_m": 10.0, "gflops": 1.5,
                                    "accuracy": 72.0, "input_size": 224}])  # fmt: skip
    out = with_predictions(table, catalogue, ["int8"])
    row = out[out["model"].eq("newcomer")].iloc[0]
    assert row["runtime"] == "int8" and row["size_mb"] == pytest.approx(11.0)
    assert row["memory_mb"] < 40.0  # int8 weights, not float32 ones


def test_fits_the_real_catalogue_metadata():
    catalogue = catalogue_frame()
    assert {"model", "family", "params_m", "gflops", "accuracy", "input_size", "fp32_size_mb", "int8_size_mb"} <= set(
        catalogue.columns
    )
    assert (catalogue["int8_size_mb"] < catalogue["fp32_size_mb"] / 3).all()
    rng = np.random.default_rng(7)
    families = sorted(set(catalogue["family"]))
    factor = dict(zip(families, rng.uniform(0.6, 1.8, len(families)), strict=True))
    latency = (
        20.0 * catalogue["gflops"] ** 0.9 * catalogue["family"].map(factor) * rng.lognormal(0.0, 0.1, len(catalogue))
    )
    table = conform(catalogue.assign(runtime="onnx", status="measured", measured=True, latency_ms=latency))
    error = median_leave_out_error(table, "onnx")
    assert error is not None and error < 0.25


def test_a_hand_made_table_gets_its_figures_from_the_catalogue():
    full = _rows()
    catalogue = _catalogue(full, [{"model": "newcomer", "family": "resnet", "params_m": 10.0, "gflops": 1.5,
                                   "accuracy": 72.0, "input_size": 224}])  # fmt: skip
    bare = conform(full[["model", "runtime", "latency_ms", "accuracy", "status", "measured"]])  # as read_table gives
    assert fit_latency_model(bare, "torch") is None  # no GFLOPS, nothing to fit on
    out = with_predictions(bare, catalogue, ["torch"])
    new = out[out["model"].eq("newcomer")].iloc[0]
    assert new["status"] == "predicted" and new["latency_ms"] == pytest.approx(25.0 * 1.5, rel=0.1)
