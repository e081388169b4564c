"""`bench-models` (every catalogue model measured on this machine, into a table) and `choose` (which models
fit a latency, size, memory and accuracy budget, from this machine's measurements or another device's table)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from core.choose.table import RUNTIMES, write_table
from core.cli.common import positive, progress_to_stderr
from core.errors import ZooScopeError
from core.models.catalog import all_specs, get_spec


def _threads(args: argparse.Namespace) -> int:
    """torch's threads for this run: --threads, else what the app uses (the command owns its process)."""
    import torch

    from core import runtime

    if args.threads:
        with runtime.TORCH_GLOBAL_STATE:
            torch.set_num_threads(args.threads)
        return args.threads
    return runtime.configure_threads()


def runtime_list(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in RUNTIMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"runtimes are a comma-separated list of {', '.join(RUNTIMES)}")
    return list(dict.fromkeys(names))


def model_list(text: str) -> list[str]:
    try:
        return list(dict.fromkeys(get_spec(part.strip()).name for part in text.split(",") if part.strip()))
    except ZooScopeError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def run_bench_models(args: argparse.Namespace) -> int:
    from core.choose.bench_models import bench_models, cheapest_first
    from core.choose.machine import this_machine

    machine = this_machine(_threads(args))
    names = args.models or cheapest_first(list(all_specs()))
    print(f"Measuring {len(names)} models on {machine.describe()} (random weights: speed does not depend on them)",
          file=sys.stderr)  # fmt: skip
    budget = args.time_budget_min * 60 if args.time_budget_min else None
    run = bench_models(names, args.runtimes, machine, progress=progress_to_stderr, time_budget_s=budget)
    if args.out:
        write_table(run.table, Path(args.out))
    _summary(run, args.out)
    if args.format == "json":
        print(run.table.to_json(orient="records", indent=2))
    elif not args.out:
        print(_printable(run.table).to_string(index=False))
    return 0


def _summary(run, out: str | None) -> None:
    table = run.table
    print(
        f"{len(run.measured_now)} models measured now, {len(run.from_cache)} from earlier runs"
        + (f"; written to {out}" if out else ""),
        file=sys.stderr,
    )
    for row in table[table["status"].ne("measured")].itertuples():
        print(f"{row.model} ({row.runtime}) {row.status}: {row.reason}", file=sys.stderr)
    if run.not_reached:
        print(f"Not reached in the time budget (the latency model predicts them): {', '.join(run.not_reached)}",
              file=sys.stderr)  # fmt: skip


def _printable(table: pd.DataFrame) -> pd.DataFrame:
    columns = ["model", "runtime", "status", "latency_ms", "throughput_ips", "memory_mb", "size_mb", "params_m",
               "gflops", "accuracy"]  # fmt: skip
    return table[columns].round(2)


def _budget(args: argparse.Namespace):
    from core.choose.frontier import Budget

    return Budget(
        max_latency_ms=args.max_latency_ms, max_size_mb=args.max_size_mb, max_memory_mb=args.max_memory_mb,
        min_accuracy=args.min_accuracy, runtime=args.runtime_choice,
    )  # fmt: skip


def run_choose(args: argparse.Namespace) -> int:
    from core.choose.frontier import choices, recommend, why_nothing_fits

    budget = _budget(args)
    if args.table:
        from core.choose.shortlist import device_table

        table = device_table(Path(args.table), budget.runtime)
    else:
        from core.choose.machine import this_machine
        from core.choose.shortlist import settle

        machine = this_machine(_threads(args))
        print(f"Measuring what the choice needs on {machine.describe()}", file=sys.stderr)
        table = settle(budget, machine, progress=progress_to_stderr)
    rows = choices(table, budget)
    if not rows:
        print(why_nothing_fits(table, budget), file=sys.stderr)
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    print(budget.describe())
    for pick in recommend(table, budget):
        print(f"- {pick.row['model']} ({pick.row['runtime']}): {pick.reason}")
    if rows:
        print(pd.DataFrame(rows).to_string(index=False))
    return 0


def _limit(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError("give a number above 0")
    return number


def register(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser(
        "bench-models", help="measure catalogue models on this machine (random weights, nothing downloaded)"
    )
    bench.add_argument("--models", type=model_list, metavar="A,B,...", help="default: the whole catalogue")
    bench.add_argument(
        "--runtime", dest="runtimes", type=runtime_list, default=["torch"], metavar="torch,onnx,int8",
        help="runtimes to measure each model in (default torch)",
    )  # fmt: skip
    bench.add_argument(
        "--threads", type=positive, help="torch's and ONNX Runtime's threads (default: what the app uses)"
    )
    bench.add_argument("--time-budget-min", type=float, metavar="MIN", help="stop starting new models after this")
    bench.add_argument("--out", metavar="TABLE.parquet", help="write the table here (Parquet, or CSV by its name)")
    bench.add_argument("--format", choices=("table", "json"), default="table")
    bench.set_defaults(run=run_bench_models)

    choose = commands.add_parser("choose", help="the models that fit a latency, size, memory and accuracy budget")
    choose.add_argument("--max-latency-ms", type=_limit, metavar="X", help="median latency at batch 1")
    choose.add_argument("--max-size-mb", type=_limit, metavar="Y", help="the model file")
    choose.add_argument("--max-memory-mb", type=_limit, metavar="M", help="what the model adds to the process")
    choose.add_argument("--min-accuracy", type=_limit, metavar="A", help="published ImageNet top-1, percent")
    choose.add_argument(
        "--runtime", dest="runtime_choice", choices=("torch", "onnx", "int8", "any"), default="any",
        help="which runtimes to choose among (default any)",
    )  # fmt: skip
    choose.add_argument(
        "--table", metavar="T", help="a table from `bench-models --out` on another device (default: measure here)"
    )
    choose.add_argument("--threads", type=positive, help="when measuring here: threads (default: what the app uses)")
    choose.add_argument("--format", choices=("table", "json"), default="table")
    choose.set_defaults(run=run_choose)
