"""Choose's measurements: the whole catalogue measured here within a time budget, the latency model's
error on models it did not see, and the table's latency against a bare forward of the same model.

    python bench/bench_choose.py [--budget-min 15] [--runtime torch] [--threads N]
                                 [--bare-models mobilenet_v3_small,resnet18,efficientnet_b0,resnet50,convnext_tiny]
                                 [--markdown] [--json PATH]

1. `bench_models` over every catalogue model, cheapest first, into an empty cache (so everything is
   really measured), starting no new model after --budget-min minutes. Goal: the whole catalogue in
   15 minutes on 2 cores; the models not reached are named (the latency model predicts them).
2. The latency model fitted with each measured model left out in turn: median relative error (goal
   at most 25%).
3. For a few models, the row `measure_model` writes into the table and a bare loop of `model(x)` under
   inference_mode, alternated five times (a shared machine drifts by 20-30% over the quarter of an
   hour the catalogue takes: convnext_tiny measured 68 to 90 ms here in one afternoon): the median
   of the table's figures over the median of the bare ones (goal within 15%). The catalogue run's own
   figure is printed beside them.

A report, not a test: it always exits 0. On a machine other work shares, every figure moves with its load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.report import run_report, table  # noqa: E402

GOAL_MINUTES, GOAL_ERROR, GOAL_BARE = 15.0, 0.25, 0.15
BARE_RUNS = 20


def bare_forward_ms(model, size: int) -> float:
    """The median of BARE_RUNS plain forwards at batch 1, nothing around them but the clock."""
    import torch

    x = torch.rand(1, 3, size, size)
    times = []
    with torch.inference_mode():
        model(x)
        for _ in range(BARE_RUNS):
            start = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def table_against_bare(name: str, machine, repeats: int = 5) -> dict:
    """The table's figure for `name` (measure_model, as bench-models writes it) and a bare forward loop,
    alternated `repeats` times: the median of each."""
    from core.choose.measure import build_random, measure_model
    from core.models.catalog import get_spec

    spec = get_spec(name)
    model = build_random(spec)
    table_ms, bare_ms = [], []
    for _ in range(repeats):
        table_ms.append(measure_model(spec, ["torch"], machine)[0]["latency_ms"])
        bare_ms.append(bare_forward_ms(model, spec.input_size))
    table, bare = statistics.median(table_ms), statistics.median(bare_ms)
    return {"model": name, "table_ms": table, "bare_ms": bare, "ratio": table / bare}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-min", type=float, default=GOAL_MINUTES, help="start no new model after this")
    parser.add_argument("--runtime", default="torch", help="comma-separated runtimes to measure (torch, onnx, int8)")
    parser.add_argument("--threads", type=int, help="torch's threads (default: what the app uses)")
    parser.add_argument("--bare-models", default="mobilenet_v3_small,resnet18,efficientnet_b0,resnet50,convnext_tiny")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ["ZOOSCOPE_CACHE_DIR"] = tempfile.mkdtemp(prefix="zooscope-bench-choose-")  # measure everything

    import torch

    from core import runtime
    from core.choose.bench_models import bench_models, cheapest_first
    from core.choose.machine import this_machine
    from core.choose.predict import leave_one_out_errors
    from core.choose.table import measured_rows
    from core.models.catalog import all_specs

    if args.threads:
        torch.set_num_threads(args.threads)
    else:
        runtime.configure_threads()
    machine = this_machine(torch.get_num_threads())
    runtimes = [name.strip() for name in args.runtime.split(",") if name.strip()]
    names = cheapest_first(list(all_specs()))
    start = time.perf_counter()
    run = bench_models(names, runtimes, machine, time_budget_s=args.budget_min * 60)
    elapsed_s = time.perf_counter() - start
    measured = measured_rows(run.table)

    errors = {name: leave_one_out_errors(measured, name) for name in runtimes}
    median_error = {name: float(frame["relative_error"].median()) for name, frame in errors.items() if len(frame)}

    torch_rows = measured[measured["runtime"].eq("torch")].set_index("model")
    bare = []
    for name in [n.strip() for n in args.bare_models.split(",") if n.strip()]:
        check = table_against_bare(name, machine)
        check["catalogue_run_ms"] = float(torch_rows.loc[name, "latency_ms"]) if name in torch_rows.index else None
        bare.append(check)

    report = {
        "machine": machine.describe(),
        "models": len(names),
        "measured": sorted(set(measured["model"])),
        "not_reached": run.not_reached,
        "skipped_or_failed": [
            f"{row.model} ({row.runtime}): {row.status}, {row.reason}"
            for row in run.table[run.table["status"].ne("measured")].itertuples()
        ],
        "elapsed_s": elapsed_s,
        "budget_min": args.budget_min,
        "median_leave_out_error": median_error,
        "bare": bare,
        "goals": {"minutes": GOAL_MINUTES, "error": GOAL_ERROR, "bare": GOAL_BARE},
    }
    _print(report, args.markdown)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


def _print(report: dict, markdown: bool) -> None:
    measured, total = len(report["measured"]), report["models"]
    print(f"{report['machine']}: {measured} of {total} models measured in {report['elapsed_s'] / 60:.1f} min "
          f"(budget {report['budget_min']:.0f} min)")  # fmt: skip
    if report["not_reached"]:
        print(f"Not reached, so predicted: {', '.join(report['not_reached'])}")
    for line in report["skipped_or_failed"]:
        print(line)
    for runtime_name, error in report["median_leave_out_error"].items():
        print(f"latency model ({runtime_name}), median error with each model left out: {error:.1%}")
    rows = [
        [b["model"], f"{b['table_ms']:.1f}", f"{b['bare_ms']:.1f}", f"{b['ratio']:.2f}",
         "" if b["catalogue_run_ms"] is None else f"{b['catalogue_run_ms']:.1f}"]
        for b in report["bare"]
    ]  # fmt: skip
    header = ["model", "table (ms)", "bare forward (ms)", "table / bare", "in the catalogue run (ms)"]
    print(table(header, rows, markdown))


if __name__ == "__main__":
    run_report(main, "bench_choose")
