"""The latency model: a model not measured yet gets a latency predicted from the ones that were.

One fit per runtime (torch, onnx and int8 scale differently with the same work):

    ms = (GFLOPS + overhead) x activation MiB ^ b x exp(family offset + c)

- Work costs time in proportion (slope 1 on GFLOPS + overhead): a fitted slope extrapolates badly
  from the small models a bench measures first to the big ones it skips (median errors of 270% and
  490% in two of the six trials below; with slope 1, at most 14%).
- `overhead` (in GFLOPS) is the fixed cost of a call and its many small layers: small models are
  far slower than their GFLOPS say (8 ms for shufflenet_v2_x0_5's 0.04 GFLOPS on one CPU thread).
  Its size depends on the machine, so each fit picks it from OVERHEADS by leave-one-out error.
- Activation MiB (core.models.footprints) is the memory traffic of wide maps (EfficientNet at large
  inputs runs 40 ms a GFLOP where ResNet runs 25).
- The family offset is ridge-penalised: a family measured many times gets its own, one measured
  once is pulled toward the global fit, one never measured gets the global fit.
- Parameters are left out: on the data below, adding them made both the leave-one-out and the
  extrapolation errors worse.

Chosen on 69 torchvision models measured on one CPU thread in PyTorch and 48 in ONNX Runtime fp32 and
int8 (random weights, median of 5): leave-one-out median error 6%, 7% and 7%; fitted on the smaller
40% or 60% by GFLOPS and predicting the rest, 9-14%. On the whole catalogue measured with 2 threads on
2 cores (bench/bench_choose.py, 83 models), the leave-one-out median error was 16.5%.
Errors are relative, so the fit is in log space.

scikit-learn is imported inside the functions that fit: importing it costs start-up.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from core.choose.table import RUNTIMES, conform, measured_rows
from core.models import footprints

MIN_ROWS = 3  # fewer measured models than this: no fit, no predictions
ALPHA = 1.0  # ridge penalty: family offsets and the activation exponent shrink toward the global fit
OVERHEADS = (0.0, 0.03, 0.1, 0.2, 0.3, 0.5, 1.0)  # GFLOPS-equivalent of a call's fixed cost, to choose from
INT8_OVERHEAD = (1.02, 0.3)  # int8 file: about 1 byte a parameter x 1.02 (scales, int32 biases) + 0.3 MiB


def _figures(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(GFLOPS, activation MiB) of each row; NaN where unknown or not positive."""
    gflops = pd.to_numeric(rows["gflops"], errors="coerce").to_numpy(dtype=float)
    sizes = pd.to_numeric(rows["input_size"], errors="coerce").fillna(0).to_numpy(dtype=float)
    families = rows["family"].astype("string").fillna("").to_numpy()
    # activations_mb falls back on families.UNKNOWN's per-pixel figure for a family it has no row for
    activations = np.array(
        [
            footprints.activations_mb(int(size), str(family)) if size > 0 else math.nan
            for size, family in zip(sizes, families, strict=True)
        ],
        dtype=float,
    )
    return np.where(gflops > 0, gflops, math.nan), np.where(activations > 0, activations, math.nan)


def _design(rows: pd.DataFrame, families: tuple[str, ...]) -> np.ndarray:
    """log(activation MiB), then one column per family of the fit (all zero for any other family)."""
    _, activations = _figures(rows)
    given = rows["family"].astype("string").fillna("").to_numpy()
    one_hot = [(given == family).astype(float) for family in families]
    return np.column_stack([np.log(activations), *one_hot])


def _work(rows: pd.DataFrame, overhead: float) -> np.ndarray:
    gflops, _ = _figures(rows)
    return np.log(gflops + overhead)


def _usable(rows: pd.DataFrame) -> pd.Series:
    """Rows with both figures and a positive latency."""
    gflops, activations = _figures(rows)
    latency = pd.to_numeric(rows["latency_ms"], errors="coerce").to_numpy(dtype=float)
    return pd.Series(np.isfinite(gflops) & np.isfinite(activations) & (latency > 0), index=rows.index)


@dataclass(frozen=True)
class LatencyModel:
    """A fitted latency model for one runtime."""

    runtime: str
    families: tuple[str, ...]  # the families with their own offset
    count: int  # the measured models it was fitted on
    overhead_gflops: float
    estimator: Any  # a fitted sklearn.linear_model.RidgeCV

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        """Predicted median batch-1 latency in ms for each row (NaN where GFLOPS or input size is unknown)."""
        if rows.empty:
            return np.array([], dtype=float)
        design = _design(rows, self.families)
        work = _work(rows, self.overhead_gflops)
        ok = np.isfinite(design).all(axis=1) & np.isfinite(work)
        out = np.full(len(rows), math.nan)
        if ok.any():
            out[ok] = np.exp(self.estimator.predict(design[ok]) + work[ok])
        return out


def _training_rows(measured: pd.DataFrame, runtime: str) -> pd.DataFrame:
    rows = measured_rows(measured)
    rows = rows[rows["runtime"].eq(runtime).fillna(False)]
    rows = rows[_usable(rows)] if not rows.empty else rows
    return rows.drop_duplicates("model", keep="last")


def _fit(rows: pd.DataFrame, runtime: str) -> LatencyModel:
    """The fit whose overhead has the lowest leave-one-out error (RidgeCV computes it in closed form)."""
    from sklearn.linear_model import RidgeCV  # here, not at the top: start-up time

    families = tuple(sorted(set(rows["family"].astype("string").fillna(""))))
    design = _design(rows, families)
    latency = np.log(rows["latency_ms"].to_numpy(dtype=float))
    best: tuple[float, float, Any] | None = None
    for overhead in OVERHEADS:
        estimator = RidgeCV(alphas=[ALPHA], store_cv_results=True).fit(design, latency - _work(rows, overhead))
        error = float(np.median(estimator.cv_results_))  # squared log errors: the same order as relative ones
        if best is None or error < best[0]:
            best = (error, overhead, estimator)
    assert best is not None  # OVERHEADS is not empty
    _, overhead, estimator = best
    return LatencyModel(
        runtime=runtime, families=families, count=len(rows), overhead_gflops=overhead, estimator=estimator
    )


def fit_latency_model(measured: pd.DataFrame, runtime: str) -> LatencyModel | None:
    """The latency model for `runtime` from the table's measured rows, or None with fewer than MIN_ROWS.

    Rows need family, gflops and input_size (with_predictions fills missing ones from the catalogue).
    """
    rows = _training_rows(measured, runtime)
    return _fit(rows, runtime) if len(rows) >= MIN_ROWS else None


def leave_one_out_errors(measured: pd.DataFrame, runtime: str) -> pd.DataFrame:
    """Each measured model predicted by a fit on all the others: model, measured_ms, predicted_ms, relative_error."""
    rows = _training_rows(measured, runtime).reset_index(drop=True)
    records = []
    if len(rows) > MIN_ROWS:  # each fit leaves one out and still needs MIN_ROWS
        for position in range(len(rows)):
            model = _fit(rows.drop(index=position), runtime)
            predicted = float(model.predict(rows.iloc[[position]])[0])
            actual = float(rows.at[position, "latency_ms"])
            records.append((rows.at[position, "model"], actual, predicted, abs(predicted - actual) / actual))
    return pd.DataFrame(records, columns=["model", "measured_ms", "predicted_ms", "relative_error"])


def median_leave_out_error(measured: pd.DataFrame, runtime: str) -> float | None:
    """The median relative leave-one-out error for `runtime`, or None where it cannot be computed."""
    errors = leave_one_out_errors(measured, runtime)
    return None if errors.empty else float(errors["relative_error"].median())


def int8_size_mb(params: float) -> float:
    """About the size of a static-int8 ONNX file of a model with `params` parameters."""
    scale, overhead = INT8_OVERHEAD
    return params / footprints.MIB * scale + overhead


def catalogue_frame() -> pd.DataFrame:
    """Every catalogue model's published figures, one row each (no model is built): a copy of the frame
    made once per process (each spec's input size builds its transforms; the page asks on every rerun)."""
    return _catalogue_frame().copy()


@functools.cache
def _catalogue_frame() -> pd.DataFrame:
    from core.models.catalog import all_specs  # imports torchvision: only where the catalogue is asked for

    return pd.DataFrame(
        [
            {
                "model": spec.name,
                "family": spec.family,
                "params_m": spec.num_params / 1e6,
                "gflops": spec.gflops,
                "accuracy": spec.acc1,
                "input_size": spec.input_size,
                "fp32_size_mb": spec.file_size_mb,
                "int8_size_mb": int8_size_mb(spec.num_params),
            }
            for spec in all_specs().values()
        ]
    )


def _most_common(column: pd.Series) -> Any:
    counts = column.dropna().value_counts()
    return counts.index[0] if len(counts) else pd.NA


def _predicted_rows(catalogue: pd.DataFrame, model: LatencyModel, machine: dict[str, Any]) -> pd.DataFrame:
    """One predicted row per catalogue model for `model.runtime`, sized and estimated from its figures."""
    rows = catalogue.copy()
    int8 = model.runtime == "int8"
    if "int8_size_mb" not in rows:
        rows["int8_size_mb"] = [int8_size_mb(p * 1e6) for p in rows["params_m"]]
    rows["runtime"] = model.runtime
    rows["status"] = "predicted"
    rows["reason"] = f"predicted from {model.count} measured models"
    rows["measured"] = False
    rows["latency_ms"] = model.predict(rows)
    rows["size_mb"] = rows["int8_size_mb"] if int8 else rows["fp32_size_mb"]
    # weights as loaded (int8 holds 1 byte a parameter, not 4) and a forward's peak activations
    weights = rows["int8_size_mb"] if int8 else rows["params_m"] * 1e6 * footprints.BYTES_PER_FLOAT / footprints.MIB
    activations = [
        footprints.activations_mb(int(size), str(family))
        for size, family in zip(rows["input_size"], rows["family"].astype(str), strict=True)
    ]
    rows["memory_mb"] = weights + np.array(activations)
    for key, value in machine.items():
        rows[key] = value
    return rows


def _with_figures(rows: pd.DataFrame, catalogue: pd.DataFrame) -> pd.DataFrame:
    """`rows` with a missing family, GFLOPS, parameter count or input size taken from the catalogue
    (a hand-made table may give only model, runtime, latency and accuracy)."""
    rows = rows.copy()
    by_model = catalogue.drop_duplicates("model").set_index("model")
    for column in ("family", "gflops", "params_m", "input_size"):
        if column not in by_model:
            continue
        known = rows["model"].map(by_model[column])
        missing = rows[column].isna() | (rows[column].eq(0) if column == "input_size" else False)  # conform's 0
        rows[column] = rows[column].where(~missing, known)
    return rows


def with_predictions(table: pd.DataFrame, catalogue: pd.DataFrame, runtimes: Iterable[str] = RUNTIMES) -> pd.DataFrame:
    """`table` plus a predicted row for every catalogue model and runtime without a row of its own.

    Measured rows are never changed. Skipped and failed rows keep their status and reason but get a
    predicted latency (measured stays false) so they can still be drawn. Earlier predicted rows are
    replaced by fresh ones. A runtime with fewer than MIN_ROWS measured models gets no predictions.
    """
    table = _with_figures(conform(table), catalogue)
    real = table.index.isin(measured_rows(table).index)
    # the machine the predictions are for: the one the measurements were made on
    machine = {
        key: _most_common(table.loc[real, key]) for key in ("threads", "cpu_model", "cores", "machine", "versions")
    }
    kept = table[~table["status"].eq("predicted").fillna(False)].copy()
    added = []
    for runtime in runtimes:
        model = fit_latency_model(kept, runtime)
        if model is None:
            continue
        here = kept["runtime"].eq(runtime).fillna(False)
        # skipped and failed rows (never a real measurement): a predicted latency to draw them at
        unmeasured = here & ~kept["status"].eq("measured").fillna(False)
        kept.loc[unmeasured, "latency_ms"] = model.predict(kept[unmeasured])
        kept.loc[unmeasured, "measured"] = False
        predicted = _predicted_rows(catalogue, model, machine)
        fresh = ~predicted["model"].isin(set(kept.loc[here, "model"])) & predicted["latency_ms"].notna()
        added.append(predicted[fresh])
    return conform(pd.concat([kept, *added], ignore_index=True))
