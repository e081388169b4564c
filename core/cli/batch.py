"""`batch classify|embed`: every image of a folder, a glob or a bucket into Parquet, on this machine or
on Ray (imported only when this command runs: Ray is not in the app's requirements)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from core.classify.predict import DEFAULT_BATCH_SIZE, DEFAULT_TOP_K, MAX_TOP_K
from core.cli.common import add_runtime_option, positive, top_k
from core.models.catalog import OFFLINE_DEFAULT
from core.runtime import ENGINE_LABELS

if TYPE_CHECKING:
    from tqdm import tqdm


class ProgressBar:
    """A tqdm bar on stderr for long work's progress(done, total, message), where a person watches."""

    def __init__(self, description: str, unit: str):
        self.description = description
        self.unit = unit
        self.bar: tqdm | None = None  # made on the first call, only where stderr is a terminal

    def __call__(self, done: int, total: int, message: str) -> None:
        if not sys.stderr.isatty():
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.description, unit=self.unit, file=sys.stderr, dynamic_ncols=True)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_batch(args: argparse.Namespace) -> int:
    from core.batch.run import run_batch as batch
    from core.batch.work import BatchJob

    job = BatchJob(args.kind, args.model, runtime=args.runtime, top_k=args.top_k, batch_size=args.batch_size)
    bar = ProgressBar(f"{args.kind} ({args.model})", "file")
    try:
        report = batch(job, args.source, args.out, engine=args.engine, address=args.address, resume=args.resume,
                       progress=bar)  # fmt: skip
    finally:
        bar.close()
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.format == "json":
        print(json.dumps({**report.as_json(), "out": args.out}, indent=2))
    else:
        verb = "classified" if args.kind == "classify" else "embedded"
        engine = ENGINE_LABELS.get(report.runtime, report.runtime)
        print(
            f"{report.done} files read ({report.done - report.errors} {verb}, {report.errors} errors as rows), "
            f"{report.skipped} already in {args.out}; it holds {report.rows} rows."
        )
        if report.done:
            print(f"{report.seconds:.1f} s, {report.per_second:.1f} files/s ({args.engine} engine, {engine}).")
    return 1 if report.done and report.errors == report.done else 0


def register(commands: argparse._SubParsersAction) -> None:
    batch = commands.add_parser(
        "batch", help="classify or embed every image of a folder, a glob or a bucket into Parquet (local or Ray)"
    )
    batch.add_argument("kind", choices=("classify", "embed"))
    batch.add_argument("source", metavar="SOURCE", help="a folder, a glob, a file, or a URI (s3://bucket/photos/)")
    batch.add_argument("--out", required=True, metavar="OUT.parquet", help="a folder of Parquet files, made if missing")
    batch.add_argument("--model", default=OFFLINE_DEFAULT, help=f"catalogue name (default {OFFLINE_DEFAULT})")
    batch.add_argument("--engine", choices=("local", "ray"), default="local")
    batch.add_argument(
        "--address", help="with --engine ray: join the Ray cluster there (auto, or HOST:6379); default: start Ray here"
    )
    batch.add_argument(
        "--batch-size", type=positive, default=DEFAULT_BATCH_SIZE, help="images per forward pass (at least 1)"
    )
    batch.add_argument("--top-k", type=top_k, default=DEFAULT_TOP_K, help=f"classify: 1..{MAX_TOP_K}")
    batch.add_argument("--resume", action="store_true", help="skip the files already in OUT, add the rest")
    batch.add_argument("--format", choices=("table", "json"), default="table", help="the summary's format")
    add_runtime_option(batch)
    batch.set_defaults(run=run_batch)
