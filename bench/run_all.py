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
    }


# --------------------------------------------------------------------------- summary rows

Row = tuple[str, str, str, str, str, str]  # figure, ours, baseline, ratio, goal, result


def _mark(ok: bool) -> str:
    return "pass" if ok else "**MISS**"


def _load_rows(data: list[dict]) -> list[Row]:
    rows: list[Row] = []
    for r in data:
        if "error" in r:
            rows.append((f"cold load {r['model']}", "error", "", "", "", r["error"]))
            continue
        tv, ours = r["torchvision"], r["zooscope"]
        goal_speed = "≥ 5x" if r["model"] == "vgg16" else "faster (> 1x)"
        ok_speed = r["speedup"] >= 5.0 if r["model"] == "vgg16" else r["speedup"] > 1.0
        rows.append(
            (
                f"cold load {r['model']} from a cached file: time",
                f"{ours['seconds']:.3f} s",
                f"{tv['seconds']:.3f} s (torchvision)",
                f"{r['speedup']:.1f}x faster",
                goal_speed,
                _mark(ok_speed),
            )
        )
        rows.append(
            (
                f"cold load {r['model']}: peak RSS growth",
                f"{ours['peak_growth'] / MB:.0f} MB",
                f"{tv['peak_growth'] / MB:.0f} MB (torchvision)",
                f"{ours['peak_growth'] / tv['peak_growth']:.2f}x",
                f"ours ≤ 1.2x file ({r['file_size'] / MB:.0f} MB)",
                _mark(ours["memory_ratio"] <= 1.2),
            )
        )
    return rows


def _classify_rows(data: dict) -> list[Row]:
    goal, goal_ips = data["setup"]["goal_overhead"], data["setup"]["goal_throughput"]
    rows: list[Row] = [
        (
            f"warm classify of one photo, {r['model']} (decode + preprocess + forward + top-k)",
            f"{r['ours_ms']:.1f} ms",
            f"{r['bare_ms']:.1f} ms (bare forward)",
            f"{r['ratio']:.3f}x",
            f"≤ {goal}x",
            _mark(r["ratio"] <= goal),
        )
        for r in data["single"]
    ]
    rows += [
        (
            f"throughput, {r['model']}, batch {r['batch']}",
            f"{r['ours_ips']:.1f} img/s",
            f"{r['bare_ips']:.1f} img/s (bare forward)",
            f"{r['ratio']:.3f}",
            f"≥ {goal_ips:.2f}",
            _mark(r["ratio"] >= goal_ips),
        )
        for r in data["batches"]
    ]
    return rows + _runtime_rows(data)


def _runtime_rows(data: dict) -> list[Row]:
    """bench_classify's runtimes table: ONNX Runtime against the bare eager forward and the bare session; int8."""
    setup = data["setup"]
    goals, goal_session = setup.get("goal_vs_eager", {}), setup.get("goal_vs_session", 1.15)
    rows: list[Row] = []
    for r in data.get("runtimes", []):
        t, model = r["times"], r["model"]
        if "onnx" not in t:
            rows.append((f"warm classify of one photo through ONNX Runtime, {model}", "stays on PyTorch", "", "", "",
                         r.get("onnx_note", "")))  # fmt: skip
            continue
        onnx, eager, session = t["onnx"]["ms"], t["eager"]["ms"], t["session_onnx"]["ms"]
        goal = goals.get(model)
        rows.append(
            (
                f"warm classify of one photo through ONNX Runtime, {model}, vs PyTorch's bare forward",
                f"{onnx:.1f} ms",
                f"{eager:.1f} ms (bare eager forward)",
                f"{onnx / eager:.3f}x",
                f"≤ {goal}x" if goal else "",
                _mark(onnx / eager <= goal) if goal else "",
            )
        )
        rows.append(
            (
                f"warm classify of one photo through ONNX Runtime, {model}, vs the bare session",
                f"{onnx:.1f} ms",
                f"{session:.1f} ms (bare ONNX Runtime session)",
                f"{onnx / session:.3f}x",
                f"≤ {goal_session}x",
                _mark(onnx / session <= goal_session),
            )
        )
        if "int8" in t:
            report = r["int8_report"]
            fast, reason = r["int8_verdict"]
            random = "" if model.startswith("efficientnet_lite") else " (random weights)"
            rows.append(
                (
                    f"int8 {model}: warm classify vs ONNX Runtime fp32; same top-1 as fp32 on "
                    f"{report['same_top1']} of {report['images']} check photos{random}; "
                    f"{r['int8_mb']:.1f} vs {r['onnx_mb']:.1f} MB",
                    f"{t['int8']['ms']:.1f} ms",
                    f"{onnx:.1f} ms (ONNX Runtime fp32)",
                    f"{t['int8']['ms'] / onnx:.3f}x",
                    "the fast choice only where faster and ≥ 95% agreement",
                    "offered as the fast choice" if fast else f"not the fast choice: {reason}",
                )
            )
    return rows


def _compare_rows(data: dict) -> list[Row]:
    models = ", ".join(data["models"])
    rows: list[Row] = []
    for r in data["results"]:
        web_size = r["megapixels"] <= data.get("goal_megapixels", float("inf"))
        rows.append(
            (
                f"Compare, {models}, on {r['image']} ({r['size']})",
                f"{r['compare']:.1f} ms",
                f"{r['forwards']:.1f} ms (sum of bare forwards)",
                f"{r['ratio']:.3f}x",
                f"≤ {data['goal']}x" if web_size else "(photos of web size)",
                _mark(r["ratio"] <= data["goal"]) if web_size else "",
            )
        )
        if "textbook" in r:
            rows.append(
                (
                    f"Compare on {r['image']} vs the textbook path (full decode, transforms() on the whole photo)",
                    f"{r['compare']:.1f} ms",
                    f"{r['textbook']:.1f} ms (textbook path)",
                    f"{r['vs_textbook']:.3f}x",
                    "< 1x (faster)",
                    _mark(r["vs_textbook"] < 1.0),
                )
            )
    return rows


def _finetune_mode_rows(data: dict) -> list[Row]:
    if "finetune" not in data:
        return []
    report, goals = data["finetune"], data["finetune"]["goals"]
    mean, natural = report["mean"], report["natural"]
    splits = len(report["runs"])
    load = report["load"][0]
    return [
        (
            f"fine-tune mode vs a linear probe, rendered digits ({report['images']} images, mean of {splits} splits)",
            f"{mean['finetune_val']:.3f} ({mean['finetune_test']:.3f} held out)",
            f"{mean['probe_val']:.3f} ({mean['probe_test']:.3f} held out) (logistic regression, same split)",
            f"{report['gap_val']:+.3f} ({report['gap_test']:+.3f})",
            f"≥ +{goals['gap_over_probe']}",
            _mark(report["gap_val"] >= goals["gap_over_probe"]),
        ),
        (
            f"fine-tune mode's whole training ({report['train_images']} training images, load average {load:.1f})",
            f"{mean['seconds']:.1f} s ({mean['epoch_seconds']:.1f} s per epoch)",
            f"{report['one_pass_s']:.2f} s (one extraction pass)",
            f"{report['finetune_vs_one_pass']:.1f}x",
            f"≤ {goals['seconds']:.0f} s",
            _mark(mean["seconds"] <= goals["seconds"]),
        ),
        (
            f"fine-tune mode vs fast mode on natural photos (the example dataset: {natural['images']} photos of "
            "brick, grass, gravel; mean of the splits)",
            f"{natural['finetune_val']:.3f}",
            f"{natural['fast_val']:.3f} (fast mode)",
            f"{natural['difference']:+.3f}",
            f"≥ {goals['natural_vs_fast']} on every split",
            _mark(natural["worst_difference"] >= goals["natural_vs_fast"]),
        ),
    ]


def _finetune_rows(data: dict) -> list[Row]:
    goals = data["goals"]
    what = f"{data['images']} images, {data['epochs']} epochs"
    onnx = []
    if "onnx_one_pass_s" in data:
        onnx = [
            (
                f"fine-tune fast mode's extraction pass through ONNX Runtime vs PyTorch ({data['images']} images)",
                f"{data['onnx_one_pass_s']:.2f} s",
                f"{data['one_pass_s']:.2f} s (PyTorch)",
                f"{data['onnx_one_pass_s'] / data['one_pass_s']:.2f}x",
                "faster (< 1x)",
                _mark(data["onnx_one_pass_s"] < data["one_pass_s"]),
            ),
            (
                f"fine-tune fast mode through ONNX Runtime vs PyTorch ({what})",
                f"{data['onnx_ours_s']:.2f} s",
                f"{data['ours_s']:.2f} s (PyTorch)",
                f"{data['onnx_ours_s'] / data['ours_s']:.2f}x",
                "",
                "",
            ),
        ]
    return onnx + [
        (
            f"fine-tune fast mode vs one feature pass ({what})",
            f"{data['ours_s']:.2f} s",
            f"{data['one_pass_s']:.2f} s (one extraction pass)",
            f"{data['ours_vs_one_pass']:.2f}x",
            f"≤ {goals['ours_vs_one_pass']}x",
            _mark(data["ours_vs_one_pass"] <= goals["ours_vs_one_pass"]),
        ),
        (
            f"fine-tune fast mode vs the naive every-epoch loop ({what})",
            f"{data['ours_s']:.2f} s",
            f"{data['naive_s']:.2f} s (naive, {data['naive_epochs']} epochs timed, extrapolated)",
            f"{data['naive_vs_ours']:.1f}x faster",
            f"≥ {goals['naive_vs_ours']}x",
            _mark(data["naive_vs_ours"] >= goals["naive_vs_ours"]),
        ),
        *_finetune_mode_rows(data),
    ]


def _finetune_memory_rows(data: list[dict]) -> list[Row]:
    return [
        (
            f"fine-tune mode's peak RSS, efficientnet_lite0 to depth '{run['depth']}' at 224 px "
            f"(micro-batches of {run['ours']['micro']} of 32)",
            f"{run['ours']['peak'] / 1e9:.2f} GB",
            f"{run['whole']['peak'] / 1e9:.2f} GB (the whole batch at once)",
            f"{run['ours']['peak'] / run['whole']['peak']:.2f}x",
            f"< {run['goal_peak_gb']} GB",
            _mark(run["ours"]["peak"] <= run["goal_peak_gb"] * 1e9),
        )
        for run in data
    ]


def _estimate_rows(data: dict) -> list[Row]:
    low, high = data["goal"]
    return [
        (
            f"fine-tune mode's time estimate, {r['model']} to depth '{r['depth']}' ({r['epochs']} epochs, "
            f"the example dataset's {r['images']} photos)",
            f"{r['actual_s']:.1f} s (actual train())",
            f"{r['estimate_s']:.1f} s (the estimate, measured in {r['measuring_s']:.0f} s)",
            f"{r['ratio']:.2f}",
            f"{low}-{high}",
            _mark(low <= r["ratio"] <= high),
        )
        for r in data["results"]
    ]


def _memory_rows(data: dict) -> list[Row]:
    ours, tv = data["zooscope"], data["torchvision"]
    rows: list[Row] = [
        (
            f"process RSS with {', '.join(data['models'])} loaded (one forward each)",
            f"{ours['rss'] / 1e9:.2f} GB ({ours['file'] / 1e9:.2f} GB of it file-backed)",
            f"{tv['rss'] / 1e9:.2f} GB (torchvision builders)",
            f"{data['ratio']:.2f}x",
            f"< {data['goal_bytes'] / 1e9:.1f} GB",
            _mark(data["passed"]),
        )
    ]
    rows.append(
        (
            "peak RSS of that process",
            f"{ours['peak'] / 1e9:.2f} GB",
            f"{tv['peak'] / 1e9:.2f} GB (torchvision builders)",
            f"{data['peak_ratio']:.2f}x",
            "",
            "",
        )
    )
    onnx = data.get("zooscope-onnx")
    if onnx:
        engines = dict(zip(data["models"], onnx["runtimes"], strict=False))
        verified = [name for name, engine in engines.items() if engine == "onnx"]
        rows.append(
            (
                f"the same five in ONNX Runtime, one session each ({len(verified)} of {len(engines)} verified)",
                f"{onnx['rss'] / 1e9:.2f} GB ({onnx['anon'] / 1e9:.2f} GB of it anonymous)",
                f"{tv['rss'] / 1e9:.2f} GB (torchvision builders)",
                f"{data['onnx_ratio']:.2f}x",
                f"< {data['goal_bytes'] / 1e9:.1f} GB",
                _mark(data["onnx_passed"]),
            )
        )
    return rows


def _allocator_rows(data: dict) -> list[Row]:
    default, tuned = data["default"], data["tuned"]
    rows: list[Row] = [
        (
            f"`make run`'s malloc.env vs glibc defaults: {name}, batch {batch}, images/s",
            f"{tuned['models'][name][batch]:.1f} img/s",
            f"{default['models'][name][batch]:.1f} img/s (glibc defaults)",
            f"{tuned['models'][name][batch] / default['models'][name][batch]:.2f}x",
            "faster (> 1x)" if batch != "1" else "",
            _mark(tuned["models"][name][batch] > default["models"][name][batch]) if batch != "1" else "",
        )
        for name in default["models"]
        for batch in default["models"][name]
    ]
    rows.append(
        (
            "`make run`'s malloc.env vs glibc defaults: RSS after the run (peak)",
            f"{tuned['rss'] / 2**20:.0f} MB ({tuned['peak'] / 2**20:.0f} MB)",
            f"{default['rss'] / 2**20:.0f} MB ({default['peak'] / 2**20:.0f} MB) (glibc defaults)",
            f"{tuned['rss'] / default['rss']:.2f}x",
            "",
            "",
        )
    )
    return rows


def _inside_rows(data: dict) -> list[Row]:
    anatomy = data["anatomy"]
    cold = sum(r["cold_s"] for r in anatomy)
    floor = sum(r["floor_s"] for r in anatomy)
    warm = max(r["warm_ms"] for r in anatomy)
    rows: list[Row] = [
        (
            f"Inside: anatomy of {len(anatomy)} models, cold (meta build, FLOP count, fx trace)",
            f"{cold:.1f} s",
            f"{floor:.1f} s (meta build + FLOP count alone)",
            f"{cold / floor:.2f}x",
            "",
            "",
        ),
        (
            "Inside: anatomy warm (cached), slowest model",
            f"{warm * 1000:.1f} µs",
            "",
            "",
            f"< {data['goal_warm_ms'] * 1000:.0f} µs",
            _mark(warm < data["goal_warm_ms"]),
        ),
    ]
    rows += [
        (
            f"Inside: stage maps of one photo, {r['model']}",
            f"{r['maps_ms']:.1f} ms",
            f"{r['plain_ms']:.1f} ms (plain forward, same preprocessing)",
            f"{r['ratio']:.3f}x",
            f"≤ {data['goal_maps']}x",
            _mark(r["ratio"] <= data["goal_maps"]),
        )
        for r in data["maps"]
    ]
    return rows


def _features_rows(data: dict) -> list[Row]:
    t = data["throughput"]
    rows: list[Row] = [
        (
            f"Features: embeddings per second, {data['model']} ({data['images']} photos, batches of 32), vs Classify",
            f"{t['embed']['ips']:.1f} img/s",
            f"{t['classify']['ips']:.1f} img/s (classify_files, same model and run)",
            f"{t['ratio']:.3f}",
            f"≥ {data['goal']}",
            _mark(t["ratio"] >= data["goal"]),
        )
    ]
    if "memory" in data:
        small, big = (data["memory"][str(count)] for count in data["memory_counts"])
        rows.append(
            (
                f"Features: peak RSS of a fresh process embedding {big['images']:,} images",
                f"{big['peak'] / MB:.0f} MB",
                f"{small['peak'] / MB:.0f} MB (the same, one batch of {small['images']})",
                f"{data['memory']['ratio']:.2f}x",
                "",
                "",
            )
        )
    return rows


def _duplicates_rows(data: dict) -> list[Row]:
    weakest, closest = data["weakest_copy"], data["closest_distinct"]
    return [
        (
            f"near-duplicates at the default threshold {data['default']} ({data['model']}): planted copies grouped "
            f"with their original, false merges",
            f"{data['copies_found']} of {data['copies_total']}, {len(data['false_merges'])} false merges",
            f"gap: distinct photos up to {closest['similarity']:.3f}, copies from {weakest['similarity']:.3f}",
            "",
            "all found, none merged",
            _mark(data["groups_as_planted"]),
        )
    ]


def _startup_rows(data: dict) -> list[Row]:
    return [
        (
            "start-up: `python -m core models` (fresh process)",
            f"{data['median']['ours']:.2f} s",
            f"{data['median']['baseline']:.2f} s (`import torch, torchvision`)",
            f"{data['ratio']:.2f}x",
            f"≤ {data['goal']}x",
            _mark(data["ratio"] <= data["goal"]),
        )
    ]


def _batch_rows(data: dict) -> list[Row]:
    local, ray = data["local"], data["ray"]
    what = f"`batch classify` of {data['images']} generated JPEGs, {data['model']}"
    rows: list[Row] = [
        (
            f"{what}: Ray Data, {ray['actors']} actors, actors' start included, vs the local engine",
            f"{ray['ips']:.1f} img/s",
            f"{local['ips']:.1f} img/s (local engine, {local['threads']} threads)",
            f"{ray['ips'] / local['ips']:.2f}x",
            "",
            "",
        )
    ]
    if ray.get("steady_ips"):
        rows.append(
            (
                f"{what}: Ray Data's steady rate (a run less a small run) vs the local engine",
                f"{ray['steady_ips']:.1f} img/s",
                f"{local['ips']:.1f} img/s (local engine)",
                f"{ray['steady_ips'] / local['ips']:.2f}x",
                "",
                "",
            )
        )
    return rows


SUMMARIES: dict[str, Callable] = {
    "bench_load.py": _load_rows,
    "bench_classify.py": _classify_rows,
    "bench_compare.py": _compare_rows,
    "bench_finetune.py": _finetune_rows,
    "bench_finetune_memory.py": _finetune_memory_rows,
    "bench_estimate.py": _estimate_rows,
    "bench_memory.py": _memory_rows,
    "bench_allocator.py": _allocator_rows,
    "bench_inside.py": _inside_rows,
    "bench_features.py": _features_rows,
    "bench_duplicates.py": _duplicates_rows,
    "bench_startup.py": _startup_rows,
    "bench_batch.py": _batch_rows,
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
    runs = [run_script(path, options.get(path.name), args.timeout, args.threads) for path in _scripts(only)]
    write_report(runs, facts, args.output, time.perf_counter() - start)
    print(f"wrote {args.output} ({(time.perf_counter() - start) / 60:.1f} min)", file=sys.stderr)
    return 0 if all(run["code"] == 0 for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
