"""Budgets, the Pareto frontier and the recommendation, over a measurements table (core.choose.table).

Every function takes the table as it is, predicted rows included: those carry measured=False, and
every sentence that names one says its latency is predicted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from core.choose.table import RUNTIMES

RUNTIME_CHOICES = (*RUNTIMES, "any")
UNUSABLE = ("skipped", "failed")  # statuses that are no choice on this machine, whatever their latency
RUNTIME_NAMES = {"torch": "PyTorch", "onnx": "ONNX Runtime", "int8": "ONNX Runtime int8"}
PREDICTED_NOTE = " (latency predicted, not measured yet)"


@dataclass(frozen=True)
class Budget:
    """What the device allows: each limit None where there is none."""

    max_latency_ms: float | None = None
    max_size_mb: float | None = None
    max_memory_mb: float | None = None
    min_accuracy: float | None = None
    runtime: str = "any"  # torch, onnx, int8 or any

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIME_CHOICES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIME_CHOICES)}, not {self.runtime!r}")

    def describe(self) -> str:
        """The budget as one plain sentence."""
        limits = []
        if self.max_latency_ms is not None:
            limits.append(f"at most {_num(self.max_latency_ms)} ms an image")
        if self.max_size_mb is not None:
            limits.append(f"a file of at most {_num(self.max_size_mb)} MB")
        if self.max_memory_mb is not None:
            limits.append(f"at most {_num(self.max_memory_mb)} MB of memory")
        if self.min_accuracy is not None:
            limits.append(f"at least {_num(self.min_accuracy)}% top-1")
        where = "any runtime" if self.runtime == "any" else RUNTIME_NAMES[self.runtime]
        if not limits:
            return f"No limits: every model, in {where}."
        listed = limits[0] if len(limits) == 1 else ", ".join(limits[:-1]) + " and " + limits[-1]
        return f"{listed[0].upper()}{listed[1:]}, in {where}."


@dataclass(frozen=True)
class Recommendation:
    row: dict[str, Any]
    reason: str


def _num(value: float) -> str:
    """3.0 -> "3", 2.25 -> "2.2": figures as a person writes them."""
    if abs(value) >= 100:
        return f"{value:.0f}"
    text = f"{value:.1f}" if abs(value) >= 10 or value == round(value, 1) else f"{value:.2g}"
    return text[:-2] if text.endswith(".0") else text


def usable(table: pd.DataFrame, runtime: str = "any") -> pd.DataFrame:
    """Rows that are a choice: a latency (measured or predicted), not skipped or failed, in `runtime`."""
    keep = table["latency_ms"].notna() & table["accuracy"].notna() & ~table["status"].isin(UNUSABLE).fillna(False)
    if runtime != "any":
        keep &= table["runtime"].eq(runtime).fillna(False)
    return table[keep]


# (column, limit attribute, "max" or "min"): every budget check in one place
_LIMITS = (
    ("latency_ms", "max_latency_ms", "max"),
    ("accuracy", "min_accuracy", "min"),
    ("size_mb", "max_size_mb", "max"),
    ("memory_mb", "max_memory_mb", "max"),
)


_LABELS = {"latency_ms": "latency", "accuracy": "accuracy", "size_mb": "file size", "memory_mb": "memory"}
_UNITS = {"latency_ms": " ms", "accuracy": "%", "size_mb": " MB", "memory_mb": " MB"}
_BEST = {
    "latency_ms": "fastest",
    "accuracy": "most accurate",
    "size_mb": "smallest",
    "memory_mb": "least memory-hungry",
}


def _passes(frame: pd.DataFrame, column: str, limit: float, kind: str) -> pd.Series:
    values = frame[column]  # a missing figure cannot be shown within a limit: NaN compares false
    return (values <= limit) if kind == "max" else (values >= limit)


def within_budget(table: pd.DataFrame, budget: Budget) -> pd.DataFrame:
    """The usable rows within every limit of `budget` (predicted rows included: they say so)."""
    rows = usable(table, budget.runtime)
    for column, attribute, kind in _LIMITS:
        limit = getattr(budget, attribute)
        if limit is not None:
            rows = rows[_passes(rows, column, limit, kind).fillna(False)]
    return rows


def on_frontier(frame: pd.DataFrame) -> pd.Series:
    """Whether each row is on the Pareto frontier of (latency: lower is better, accuracy: higher).

    A row is off it when another is at least as fast and at least as accurate, and strictly better in
    one; equal rows therefore stay on together. Each (model, runtime) row is its own point.
    """
    latency = frame["latency_ms"].to_numpy(dtype=float)
    accuracy = frame["accuracy"].to_numpy(dtype=float)
    known = np.isfinite(latency) & np.isfinite(accuracy)
    # dominated[i, j]: row j dominates row i (NaN compares false, so an unknown row dominates nothing)
    as_good = (latency[None, :] <= latency[:, None]) & (accuracy[None, :] >= accuracy[:, None])
    better = (latency[None, :] < latency[:, None]) | (accuracy[None, :] > accuracy[:, None])
    dominated = (as_good & better).any(axis=1)
    return pd.Series(known & ~dominated, index=frame.index, name="on_frontier")


def _ranked(rows: pd.DataFrame) -> pd.DataFrame:
    """Best first: most accurate, then fastest, then smallest."""
    return rows.sort_values(["accuracy", "latency_ms", "size_mb"], ascending=[False, True, True], kind="stable")


def _ratio(theirs: float, ours: float, more: str, less: str) -> tuple[str, bool] | None:
    """("2.1x faster", True) when ours is the better figure; None where about the same or unknown."""
    if not (math.isfinite(theirs) and math.isfinite(ours)) or ours <= 0 or theirs <= 0:
        return None
    factor = theirs / ours
    if 1 / 1.1 < factor < 1.1:
        return None
    return (f"{_num(factor)}x {more}", True) if factor >= 1.1 else (f"{_num(1 / factor)}x {less}", False)


def _runtime(row: pd.Series) -> str:
    return RUNTIME_NAMES.get(str(row["runtime"]), str(row["runtime"]))


def _first_reason(row: pd.Series, budget: Budget) -> str:
    limit = f" (budget {_num(budget.max_latency_ms)} ms)" if budget.max_latency_ms is not None else ""
    size = f", {_num(float(row['size_mb']))} MB" if pd.notna(row["size_mb"]) else ""
    note = "" if row["measured"] else PREDICTED_NOTE
    return (
        f"The most accurate model within your budget: {_num(float(row['accuracy']))}% top-1 at "
        f"{_num(float(row['latency_ms']))} ms in {_runtime(row)}{limit}{size}{note}."
    )


def _next_reason(row: pd.Series, best: pd.Series) -> str:
    gap = float(best["accuracy"]) - float(row["accuracy"])
    accuracy = (
        f"{gap:.1f} points less accurate than {best['model']}" if gap > 0.05 else f"As accurate as {best['model']}"
    )
    compared = [
        _ratio(float(best["latency_ms"]), float(row["latency_ms"]), "faster", "slower"),
        _ratio(float(best["size_mb"]), float(row["size_mb"]), "smaller", "larger"),
    ]
    gains = [text for text, good in filter(None, compared) if good]
    losses = [text for text, good in filter(None, compared) if not good]
    sentence = accuracy + (" and " + " and ".join(losses) if losses else "")
    if gains:
        sentence += ", but " + " and ".join(gains)
    note = "" if row["measured"] else PREDICTED_NOTE
    return f"{sentence}, in {_runtime(row)}{note}."


def recommend(table: pd.DataFrame, budget: Budget, count: int = 3) -> list[Recommendation]:
    """Up to `count` models within `budget`: the most accurate first, then the next best trades.

    The frontier within the budget comes first: each next one is faster than the one before, so each
    buys something for the accuracy it gives up (an int8 row is a point of its own); the rest follow
    by accuracy. A model appears once, in its first runtime in that order. Empty where nothing fits
    (why_nothing_fits says why).
    """
    rows = _ranked(within_budget(table, budget))
    if rows.empty or count <= 0:
        return []
    frontier = on_frontier(rows)
    ordered = pd.concat([rows[frontier], rows[~frontier]]).drop_duplicates("model", keep="first").head(count)
    best = ordered.iloc[0]
    picks = []
    for position, (_, row) in enumerate(ordered.iterrows()):
        reason = _first_reason(row, budget) if position == 0 else _next_reason(row, best)
        picks.append(Recommendation(row=_plain(row), reason=reason))
    return picks


def _limit_sentence(rows: pd.DataFrame, column: str, limit: float, kind: str, context: str) -> str:
    """The best figure among `rows` for `column`, against its limit."""
    values = rows[column].dropna()
    if values.empty:
        within = f"{_num(limit)}{_UNITS[column]}"
        return f"No model{context} records its {_LABELS[column]}, so none can be shown within {within}."
    best = rows.loc[values.idxmin() if kind == "max" else values.idxmax()]
    bound = "a budget" if kind == "max" else "a minimum"
    note = "" if best["measured"] or column != "latency_ms" else " (predicted)"
    return (
        f"The {_BEST[column]} model{context} is {best['model']} in {_runtime(best)} at "
        f"{_num(float(best[column]))}{_UNITS[column]}{note}, against {bound} of {_num(limit)}{_UNITS[column]}."
    )


def why_nothing_fits(table: pd.DataFrame, budget: Budget) -> str:
    """One sentence naming the limit that rules every model out, with the closest figure against it."""
    rows = usable(table, budget.runtime)
    if rows.empty:
        where = "" if budget.runtime == "any" else f" in {RUNTIME_NAMES[budget.runtime]}"
        return f"No model has a latency{where} in this table yet: measure some first (python -m core bench-models)."
    given = [
        (column, getattr(budget, attr), kind) for column, attr, kind in _LIMITS if getattr(budget, attr) is not None
    ]
    if not within_budget(table, budget).empty:
        return "Some models fit this budget."
    # a limit no model meets even alone is the one to name
    for column, limit, kind in given:
        if not _passes(rows, column, limit, kind).any():
            return _limit_sentence(rows, column, limit, kind, "")
    # otherwise each limit alone leaves some: name the one missed by the least, among the models within the others
    misses = []
    for column, limit, kind in given:
        others = rows
        for other, other_limit, other_kind in given:
            if other != column:
                others = others[_passes(others, other, other_limit, other_kind).fillna(False)]
        values = others[column].dropna()
        if values.empty:
            continue
        closest = values.min() if kind == "max" else values.max()
        misses.append((abs(closest - limit) / max(abs(limit), 1e-9), column, limit, kind, others))
    if not misses:
        names = " and ".join(_LABELS[column] for column, _, _ in given)
        return f"No model meets the {names} limits together: loosen two of them."
    _, column, limit, kind, others = min(misses, key=lambda miss: miss[0])
    context = " within your other limits" if len(given) > 1 else ""
    return _limit_sentence(others, column, limit, kind, context)


def _plain(row: pd.Series) -> dict[str, Any]:
    """A row as plain Python values (NaN and NA as None) for JSON."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if value is None or (not isinstance(value, (str, bool, np.bool_)) and pd.isna(value)):
            out[str(key)] = None
        elif isinstance(value, (np.bool_, bool)):
            out[str(key)] = bool(value)
        elif isinstance(value, (np.integer, int)):
            out[str(key)] = int(value)
        elif isinstance(value, (np.floating, float)):
            out[str(key)] = float(value)
        else:
            out[str(key)] = str(value)
    return out


def _rounded(value: Any, digits: int) -> float | None:
    return None if value is None or pd.isna(value) else round(float(value), digits)


def choices(table: pd.DataFrame, budget: Budget) -> list[dict[str, Any]]:
    """Every row within `budget`, best first, as plain dicts (what the CLI prints as JSON).

    `on_frontier` is computed over every usable row of the budget's runtime, not only the ones within
    the other limits: it says whether some other choice is both faster and more accurate.
    """
    pool = usable(table, budget.runtime)
    frontier = on_frontier(pool)
    rows = _ranked(within_budget(table, budget))
    return [
        {
            "model": str(row["model"]),
            "runtime": str(row["runtime"]),
            "latency_ms": _rounded(row["latency_ms"], 2),
            "size_mb": _rounded(row["size_mb"], 1),
            "memory_mb": _rounded(row["memory_mb"], 1),
            "accuracy": _rounded(row["accuracy"], 3),
            "measured": bool(row["measured"]),
            "on_frontier": bool(frontier.get(index, False)),
        }
        for index, row in rows.iterrows()
    ]
