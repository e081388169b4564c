"""BENCHMARKS.md's summary rows for Choose: the catalogue measured in its time budget, the latency model's
error on models left out, and the table's latency against a bare forward. Each takes bench_choose's --json."""

from __future__ import annotations

from bench.summary_rows import Row, mark


def choose_rows(data: dict) -> list[Row]:
    goals = data["goals"]
    measured, total = len(data["measured"]), data["models"]
    minutes = data["elapsed_s"] / 60
    rows: list[Row] = [
        (
            f"the whole catalogue measured in torch eager ({data['machine']}), cheapest first"
            + (f"; not reached, so predicted: {', '.join(data['not_reached'])}" if data["not_reached"] else ""),
            f"{measured} of {total} models in {minutes:.1f} min",
            f"budget {data['budget_min']:.0f} min",
            f"{measured / total:.0%}",
            f"all {total} in ≤ {goals['minutes']:.0f} min",
            mark(measured == total and minutes <= goals["minutes"]),
        )
    ]
    for runtime, error in data["median_leave_out_error"].items():
        rows.append(
            (
                f"latency model ({runtime}): median error with each measured model left out",
                f"{error:.1%}",
                "the measured latency",
                "",
                f"≤ {goals['error']:.0%}",
                mark(error <= goals["error"]),
            )
        )
    for bare in data["bare"]:
        rows.append(
            (
                f"{bare['model']}: the table's latency against a bare forward loop, same run",
                f"{bare['table_ms']:.1f} ms",
                f"{bare['bare_ms']:.1f} ms (bare)",
                f"{bare['ratio']:.2f}x",
                f"within {goals['bare']:.0%}",
                mark(abs(bare["ratio"] - 1) <= goals["bare"]),
            )
        )
    return rows
