"""Run every `bench/bench_*.py` and write BENCHMARKS.md: the machine, then each figure next to its baseline.

    python bench/run_all.py [--output BENCHMARKS.md] [--only classify,memory] [--threads 1]

Each script runs in its own subprocess with `--markdown` (and, for the scripts below, the options
that keep the whole run under ten minutes on a 2-core machine, and `--json` to read the figures
back). A script this file does not know yet still runs, with `--markdown` only, and its output is
included. The summary table puts ours next to the baseline measured in the same run, as a ratio,
with the goal and pass / MISS.

Without a GPU the accelerator table cannot be measured; a GPU table written by an earlier run on a
GPU machine (between the gpu-table markers in BENCHMARKS.md) is kept as it was.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import machine  # noqa: E402
from bench import summary_rows as model_rows  # noqa: E402
from bench import summary_rows_choose as choose_rows  # noqa: E402
from bench import summary_rows_features_from as features_from_rows  # noqa: E402
from bench import summary_rows_shrink as shrink_rows  # noqa: E402
from bench import summary_rows_transfer as transfer_rows  # noqa: E402
from bench import summary_rows_work as work_rows  # noqa: E402
from bench.summary_rows import Row  # noqa: E402

MB = 2**20
GPU_START, GPU_END = "<!-- gpu-table:start -->", "<!-- gpu-table:end -->"
GPU_COMMAND = ".venv/bin/python bench/bench_classify.py --skip-cpu --markdown"
PRECISION_NOTE = (
    "\n\nPrecision on a GPU: `ZOOSCOPE_PRECISION=auto` (default) runs a model in bf16 autocast only when the "
    "device supports bf16, its family is not one bf16 slows (EfficientNet, MobileNet, MNASNet: depthwise "
    "convolutions), and bf16's top-1 agrees with fp32's on at least 99% of the check's images (the offline "
    "efficientnet_lite0 on the three example photos and 13 deterministic variations of each; run once per "
    "process); `fp32` or `bf16` force it. On the CPU, auto is fp32."
)


def _options(threads: int) -> dict[str, list[str]]:
    """Per script: the options for a run of reasonable length (all take --markdown and --json)."""
    t = ["--threads", str(threads)]
    return {
        "bench_load.py": ["--models", "resnet50,vgg16,efficientnet_b0,vit_b_16", "--repeats", "3", *t],
        "bench_classify.py": ["--runs", "41", "--batch-repeats", "7", "--runtime-runs", "21", *t],
        "bench_compare.py": ["--repeats", "5", *t],
        # Fine-tune mode's 3-minute goal is for the app's own threads on a 2-core CPU, not --threads.
        "bench_finetune.py": ["--repeats", "1", "--naive-epochs", "2", "--splits", "3", *t],
        "bench_finetune_memory.py": t,
        # The estimate is for the app's own threads, as the page measures it: no --threads.
        "bench_estimate.py": ["--models", "efficientnet_lite0", "--depths", "head,last,all", "--epochs", "3"],
        "bench_memory.py": ["--repeats", "1", *t],
        "bench_allocator.py": ["--repeats", "5", *t],
        "bench_inside.py": ["--repeats", "7", "--maps-models", "resnet50,vit_b_16", *t],
        "bench_features.py": ["--images", "96", "--repeats", "5", "--memory-images", "2000", *t],
        "bench_duplicates.py": t,
        "bench_startup.py": ["--repeats", "5"],
        "bench_batch.py": ["--images", "1000"],  # Ray's actors take the CPUs: no --threads
        "bench_light_work.py": [],  # the app's own threads; as many trainings as the line runs here
        # The app's own threads on the cores a small host has: no --threads.
        "bench_soak.py": ["--sessions", "12", "--memory-mb", "2000", "--cores", "2"],
        # The app's own threads, as the page measures; the whole catalogue within its 15-minute goal.
        "bench_choose.py": ["--budget-min", "15"],
        "bench_shrink.py": t,
        "bench_features_from.py": ["--seeds", "3", *t],
        "bench_transfer.py": t,
    }


# Scripts that need longer than --timeout: the soak runs every flow alone, then twelve sessions at once.
LONGER = {"bench_soak.py": 3600.0, "bench_choose.py": 1800.0}

SUMMARIES: dict[str, Callable] = {
    "bench_load.py": model_rows.load_rows,
    "bench_classify.py": model_rows.classify_rows,
    "bench_compare.py": model_rows.compare_rows,
    "bench_finetune.py": work_rows.finetune_rows,
    "bench_finetune_memory.py": work_rows.finetune_memory_rows,
    "bench_estimate.py": work_rows.estimate_rows,
    "bench_memory.py": model_rows.memory_rows,
    "bench_allocator.py": model_rows.allocator_rows,
    "bench_inside.py": work_rows.inside_rows,
    "bench_features.py": work_rows.features_rows,
    "bench_duplicates.py": work_rows.duplicates_rows,
    "bench_startup.py": model_rows.startup_rows,
    "bench_batch.py": model_rows.batch_rows,
    "bench_light_work.py": work_rows.light_work_rows,
    "bench_soak.py": work_rows.soak_rows,
    "bench_choose.py": choose_rows.choose_rows,
    "bench_shrink.py": shrink_rows.shrink_rows,
    "bench_features_from.py": features_from_rows.features_from_rows,
    "bench_transfer.py": transfer_rows.transfer_rows,
}
ORDER = [
    "bench_load.py",
    "bench_classify.py",
    "bench_compare.py",
    "bench_finetune.py",
    "bench_finetune_memory.py",
    "bench_estimate.py",
    "bench_memory.py",
    "bench_allocator.py",
    "bench_inside.py",
    "bench_features.py",
    "bench_duplicates.py",
    "bench_startup.py",
    "bench_batch.py",
    "bench_light_work.py",
    "bench_soak.py",
    "bench_choose.py",
    "bench_shrink.py",
    "bench_features_from.py",
    "bench_transfer.py",
]


# --------------------------------------------------------------------------- running


def _scripts(only: set[str] | None) -> list[Path]:
    def order(path: Path) -> tuple[int, str]:
        return (ORDER.index(path.name) if path.name in ORDER else len(ORDER), path.name)

    found = sorted((ROOT / "bench").glob("bench_*.py"), key=order)
    if only:
        found = [p for p in found if p.stem.removeprefix("bench_") in only or p.name in only]
    return found


def _generic_options(path: Path, threads: int) -> tuple[list[str], bool]:
    """For a script this file does not know: --markdown and --threads where its source offers them."""
    source = path.read_text()
    options = ["--threads", str(threads)] if '"--threads"' in source else []
    markdown = '"--markdown"' in source
    return (["--markdown"] if markdown else []) + options, markdown


def run_script(path: Path, options: list[str] | None, timeout: float, threads: int) -> dict:
    known = path.name in SUMMARIES
    markdown = True
    if options is None:
        options, markdown = _generic_options(path, threads)
    else:
        options = ["--markdown", *options]
    with tempfile.TemporaryDirectory(prefix="zooscope-bench-") as folder:
        json_path = Path(folder) / "result.json"
        command = [sys.executable, str(path), *options]
        if known:
            command += ["--json", str(json_path)]
        print(f"== {path.name}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=timeout)
            stdout, stderr, code = done.stdout, done.stderr, done.returncode
        except subprocess.TimeoutExpired as expired:
            stdout = expired.stdout.decode() if isinstance(expired.stdout, bytes) else expired.stdout or ""
            stderr, code = f"timed out after {timeout:.0f} s", -1
        seconds = time.perf_counter() - start
        data = json.loads(json_path.read_text()) if known and json_path.exists() else None
    print(f"   {seconds:.0f} s", file=sys.stderr, flush=True)
    return {
        "name": path.name,
        "command": " ".join(["python", f"bench/{path.name}", *command[2:]]).replace(str(json_path), "PATH"),
        "markdown": markdown,
        "stdout": stdout.strip(),
        "stderr": stderr.strip(),
        "code": code,
        "seconds": seconds,
        "data": data,
    }


# --------------------------------------------------------------------------- the report


def _summary(runs: list[dict]) -> str:
    rows: list[Row] = []
    for run in runs:
        if run["data"] is None or run["name"] not in SUMMARIES:
            continue
        try:
            rows += SUMMARIES[run["name"]](run["data"])
        except (KeyError, TypeError, ZeroDivisionError) as error:
            rows.append((run["name"], "", "", "", "", f"could not summarise: {error!r}"))
    header = "| figure | ours | baseline (same run) | ratio | goal | result |\n| --- | --- | --- | --- | --- | --- |"
    return header + "\n" + "\n".join("| " + " | ".join(row) + " |" for row in rows)


def _gpu_table(runs: list[dict], facts: dict) -> str | None:
    classify = next((run for run in runs if run["name"] == "bench_classify.py"), None)
    gpu = classify and classify["data"] and classify["data"].get("gpu")
    if not gpu:
        return None
    from bench.bench_classify import report as classify_report

    lines = classify_report({"single": [], "batches": [], "gpu": gpu, "setup": classify["data"]["setup"]}, True)
    table = lines.split("Accelerator table", 1)[1]
    return f"Measured on {facts['date']}, {gpu['device']}, torch {facts['torch']}.\n\nAccelerator table{table}"


def _kept_gpu_block(output: Path) -> str | None:
    try:
        text = output.read_text()
    except OSError:
        return None
    match = re.search(re.escape(GPU_START) + r"\n(.*?)\n" + re.escape(GPU_END), text, re.S)
    if match and "Measured on" in match.group(1):
        return re.sub(r"\n*\(Kept from an earlier run[^\n]*\)$", "", match.group(1).rstrip())
    return None


def write_report(runs: list[dict], facts: dict, output: Path, total_seconds: float) -> str:
    measured = _gpu_table(runs, facts)
    kept = None if measured else _kept_gpu_block(output)
    if measured:
        gpu_block = measured
    elif kept:
        gpu_block = kept + "\n\n(Kept from an earlier run on a GPU machine: this run had " + facts["gpu"] + ".)"
    else:
        gpu_block = (
            f"**Not measured: this run had {facts['gpu']}.** The GPU path (models on CUDA, channels-last CNNs, "
            "preprocessing on the GPU from pinned memory, bf16 autocast behind the agreement check) is covered by "
            "tests that run on the CPU where the logic allows (tests/unit/test_gpu_path.py) and by CUDA-only tests "
            "that were skipped here. On a machine with an NVIDIA GPU, `make bench` adds the table (throughput at batch "
            "1 and 64 for resnet50 and vit_b_16, fp32 and bf16, through core vs the bare PyTorch forward of the same "
            f"weights and precision); for that table alone: `{GPU_COMMAND}`. The CUDA-only tests: "
            "`.venv/bin/python -m pytest tests/unit/test_gpu_path.py`."
        )
    if not kept:  # a kept block already has this paragraph
        gpu_block += PRECISION_NOTE
    parts = [
        "# ZooScope benchmarks",
        "",
        "Written by `make bench` (`bench/run_all.py`): every `bench/bench_*.py` in its own process, each figure "
        "next to its baseline measured in the same run. Models are built with random weights written to a "
        "temporary cache (speed and memory do not depend on the values) or are the bundled offline model, so the "
        "whole run is offline. Small repeat counts keep it under ten minutes on a 2-core machine: on a shared "
        "machine the forwards are noisy (see the load average), so treat ratios within a few percent of a goal "
        "as a tie.",
        "",
        "## Machine",
        "",
        machine.markdown(facts),
        "",
        f"Whole run: {total_seconds / 60:.1f} min; load average at the end: "
        + ", ".join(f"{x:.2f}" for x in os.getloadavg())
        + ".",
        "",
        "## Summary",
        "",
        _summary(runs),
        "",
        "bench_classify's times are this thread's CPU time with one torch thread (the work, not the waits for a "
        "core that other jobs hold); its section shows the wall-clock ratios of the same runs. The other scripts "
        "time wall-clock.",
        "",
        "## GPU",
        "",
        GPU_START,
        gpu_block,
        GPU_END,
        "",
    ]
    for run in runs:
        parts += [f"## {run['name']}", "", f"`{run['command']}` ({run['seconds']:.0f} s)", ""]
        if run["code"] != 0 or not run["stdout"]:
            parts += ["```", f"exit status {run['code']}", *run["stderr"].splitlines()[-15:], "```", ""]
        if run["stdout"]:
            parts += [run["stdout"], ""] if run["markdown"] else ["```", run["stdout"], "```", ""]
        failure = next((line for line in run["stderr"].splitlines() if " failed: " in line), None)
        if failure:
            parts += [f"> {failure}", ""]
    text = "\n".join(parts)
    output.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--only", help="comma-separated script names (load, classify, ...): run just these")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads in every script (default 1)")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per script")
    args = parser.parse_args(argv)

    facts = machine.describe()
    only = {name.strip() for name in args.only.split(",")} if args.only else None
    options = _options(args.threads)
    start = time.perf_counter()
    runs = [
        run_script(path, options.get(path.name), max(args.timeout, LONGER.get(path.name, 0)), args.threads)
        for path in _scripts(only)
    ]
    write_report(runs, facts, args.output, time.perf_counter() - start)
    print(f"wrote {args.output} ({(time.perf_counter() - start) / 60:.1f} min)", file=sys.stderr)
    return 0 if all(run["code"] == 0 for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
