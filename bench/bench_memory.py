"""The whole process's resident memory with five popular models loaded at once: ours vs torchvision's.

    python bench/bench_memory.py [--models resnet50,vgg16,efficientnet_b0,mobilenet_v3_large,vit_b_16]
                                 [--repeats 1] [--threads 1] [--no-streamlit] [--markdown] [--json PATH]

Offline and self-contained: the script writes each model's weights file itself (random values under
torchvision's real file name) into a temporary hub cache, then, in a fresh subprocess per variant:

- ours: the app's pool, `core.engines.pool.ModelPool("cpu")` with its default memory budget, loading each
  model's handle in PyTorch (meta-device build, mmap'd weights assigned, not copied);
- baseline: `torchvision.models.get_model(name, weights="DEFAULT")` for each (torchvision's standard
  builder: random initialisation, then the cached file loaded and copied in);
- ours in ONNX Runtime: the same pool loading through `core.engines.choice.load_handle` with
  runtime onnx, as the app does on the CPU: one ONNX Runtime session per model, the PyTorch module
  beside it memory-mapped and untouched. The exports are made (and checked against PyTorch) first,
  in another process, into a temporary ZOOSCOPE_CACHE_DIR, so this process is an app restarted with
  a warm cache: it checks each file's SHA-256 and opens the sessions.

Then one forward pass of each model on one 224 px image, so that every weight page has been read
(an mmap'd page counts in RSS only once touched), and the process's RSS is read from
/proc/self/status: total, anonymous (private memory) and file-backed (the mmap'd weights: page
cache, shared between processes and reclaimable). Streamlit is imported first in both, as in the
app's process (`--no-streamlit` to leave it out). Goal: ours under 2.0 GB in all (Streamlit
Community Cloud gives an app about 2.7 GB).

A report, not a test: it always exits 0.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.report import run_report, table  # noqa: E402 (after the path setup)

DEFAULT_MODELS = "resnet50,vgg16,efficientnet_b0,mobilenet_v3_large,vit_b_16"
VARIANTS = ("torchvision", "zooscope", "zooscope-onnx")
GOAL_BYTES = 2.0e9  # 2.0 GB
RESULT_TAG = "BENCH_RESULT "
MB = 2**20


def _status() -> dict[str, int]:
    """VmRSS, RssAnon, RssFile, VmHWM of this process, in bytes."""
    wanted = {"VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"}
    values = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            if key in wanted:
                values[key] = int(rest.split()[0]) * 1024
    return values


# --------------------------------------------------------------------------- child side


def _child(variant: str, names: list[str], hub_dir: str, streamlit: bool) -> dict:
    if threads := os.environ.get("BENCH_TORCH_THREADS"):
        import torch

        torch.set_num_threads(int(threads))
    if streamlit:
        import streamlit  # noqa: F401  (the app's process has it loaded)
    import torch
    import torchvision

    from bench.fake_weights import use_hub
    from core.engines.choice import load_handle
    from core.engines.pool import ModelPool
    from core.models.catalog import get_spec
    from core.models.keys import ModelKey

    use_hub(Path(hub_dir))
    before = _status()
    start = time.perf_counter()
    evicted: list[str] = []
    runtimes: list[str] = []
    if variant == "zooscope":
        pool = ModelPool("cpu", loader=functools.partial(load_handle, runtime_choice="torch"))
        forwards = [pool.get(ModelKey(name), on_evict=lambda key: evicted.append(key.name)).torch.module
                    for name in names]  # fmt: skip
        kept = [key.name for key in pool.loaded()]
    elif variant == "zooscope-onnx":
        pool = ModelPool("cpu", loader=functools.partial(load_handle, runtime_choice="onnx"))
        models = [pool.get(ModelKey(name), on_evict=lambda key: evicted.append(key.name)) for name in names]
        forwards = [model.forward for model in models]
        runtimes = [model.runtime for model in models]
        kept = [key.name for key in pool.loaded()]
    else:
        forwards = [torchvision.models.get_model(name, weights="DEFAULT").eval() for name in names]
        kept = list(names)
    load_seconds = time.perf_counter() - start
    loaded = _status()
    start = time.perf_counter()
    with torch.inference_mode():
        for name, forward in zip(names, forwards, strict=True):
            size = get_spec(name).input_size
            forward(torch.zeros(1, 3, size, size))
    forward_seconds = time.perf_counter() - start
    after = _status()
    return {
        "before": before,
        "loaded": loaded,
        "after": after,
        "peak": max(after["VmHWM"], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024),
        "load_seconds": load_seconds,
        "forward_seconds": forward_seconds,
        "kept": kept,
        "evicted": evicted,
        "runtimes": runtimes,
    }


def _prepare(names: list[str], hub_dir: str) -> dict:
    """Export and check each model for ONNX Runtime into the cache (the app's first use of each)."""
    from bench.fake_weights import use_hub
    from core.engines.choice import load_handle
    from core.models.keys import ModelKey

    use_hub(Path(hub_dir))
    start = time.perf_counter()
    runtimes = {name: load_handle(ModelKey(name), "cpu", runtime_choice="onnx").runtime for name in names}
    return {"runtimes": runtimes, "seconds": time.perf_counter() - start}


# --------------------------------------------------------------------------- parent side


def _run_child(variant: str, names: list[str], hub_dir: Path, threads: int | None, streamlit: bool) -> dict:
    env = dict(os.environ, ZOOSCOPE_OFFLINE="1", ZOOSCOPE_CACHE_DIR=str(hub_dir.parent / "zooscope-cache"))
    env.pop("ZOOSCOPE_WEIGHTS_DIR", None)
    if threads:
        env["BENCH_TORCH_THREADS"] = str(threads)
    command = [sys.executable, str(Path(__file__).resolve()), "--child", variant, ",".join(names), str(hub_dir)]
    if not streamlit:
        command.append("--no-streamlit")
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG) :])
    tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
    raise RuntimeError(f"child {variant} exited {done.returncode}: " + " | ".join(tail))


def bench(names: list[str], repeats: int, threads: int | None, streamlit: bool) -> dict:
    from bench.fake_weights import write_random_weights

    hub_dir = Path(tempfile.mkdtemp(prefix="zooscope-bench-memory-")) / "hub"
    try:
        paths = write_random_weights(names, hub_dir)
        file_bytes = sum(path.stat().st_size for path in paths.values())
        print("  exporting the models for ONNX Runtime (first use, not measured) ...", file=sys.stderr, flush=True)
        prepared = _run_child("prepare", names, hub_dir, threads, streamlit=False)
        runs: dict[str, list[dict]] = {variant: [] for variant in VARIANTS}
        for index in range(repeats):
            for variant in VARIANTS if index % 2 == 0 else VARIANTS[::-1]:
                print(f"  {variant} (run {index + 1} of {repeats}) ...", file=sys.stderr, flush=True)
                runs[variant].append(_run_child(variant, names, hub_dir, threads, streamlit))
    finally:
        shutil.rmtree(hub_dir.parent, ignore_errors=True)
    summary = {}
    for variant, variant_runs in runs.items():

        def median(pick, variant_runs=variant_runs) -> float:
            return statistics.median(pick(run) for run in variant_runs)

        summary[variant] = {
            "rss_before": median(lambda r: r["before"]["VmRSS"]),
            "rss_loaded": median(lambda r: r["loaded"]["VmRSS"]),
            "rss": median(lambda r: r["after"]["VmRSS"]),
            "anon": median(lambda r: r["after"]["RssAnon"]),
            "file": median(lambda r: r["after"]["RssFile"]),
            "peak": median(lambda r: r["peak"]),
            "load_seconds": median(lambda r: r["load_seconds"]),
            "forward_seconds": median(lambda r: r["forward_seconds"]),
            "kept": variant_runs[0]["kept"],
            "evicted": variant_runs[0]["evicted"],
            "runtimes": variant_runs[0].get("runtimes", []),
        }
    return {
        "models": names,
        "file_bytes": file_bytes,
        "repeats": repeats,
        "streamlit": streamlit,
        "goal_bytes": GOAL_BYTES,
        **summary,
        "ratio": summary["zooscope"]["rss"] / summary["torchvision"]["rss"],
        "peak_ratio": summary["zooscope"]["peak"] / summary["torchvision"]["peak"],
        "passed": summary["zooscope"]["rss"] < GOAL_BYTES,
        "onnx_ratio": summary["zooscope-onnx"]["rss"] / summary["torchvision"]["rss"],
        "onnx_passed": summary["zooscope-onnx"]["rss"] < GOAL_BYTES,
        "export_seconds": prepared["seconds"],
    }


def report(result: dict, markdown: bool, threads: int | None, load: tuple[float, float]) -> str:
    header = ["variant", "RSS MB", "anonymous MB", "file-backed MB", "peak RSS MB", "RSS before loading MB", "load s"]
    rows = []
    labels = (
        ("torchvision", "torchvision builders"),
        ("zooscope", "ours (ModelPool), PyTorch"),
        ("zooscope-onnx", "ours (ModelPool), ONNX Runtime"),
    )
    for variant, label in labels:
        r = result[variant]
        rows.append(
            [
                label,
                f"{r['rss'] / MB:.0f}",
                f"{r['anon'] / MB:.0f}",
                f"{r['file'] / MB:.0f}",
                f"{r['peak'] / MB:.0f}",
                f"{r['rss_before'] / MB:.0f}",
                f"{r['load_seconds']:.2f}",
            ]
        )
    rows_table = table(header, rows, markdown)
    ours, onnx = result["zooscope"], result["zooscope-onnx"]
    verdict = "pass" if result["passed"] else "MISS"
    onnx_verdict = "pass" if result["onnx_passed"] else "MISS"
    in_onnx = [name for name, engine in zip(result["models"], onnx["runtimes"], strict=False) if engine == "onnx"]
    out = [
        f"{', '.join(result['models'])} all loaded, then one forward each; weights files "
        f"{result['file_bytes'] / MB:.0f} MB in all; streamlit imported: {'yes' if result['streamlit'] else 'no'}; "
        f"median of {result['repeats']} fresh process(es) per variant; {threads or 'default'} torch thread(s); "
        f"load average {load[0]:.1f} -> {load[1]:.1f}.",
        "",
        rows_table,
        "",
        f"Ours: {ours['rss'] / 1e9:.2f} GB RSS (goal < {GOAL_BYTES / 1e9:.1f} GB: {verdict}); "
        f"ours / torchvision RSS = {result['ratio']:.2f}, peak {result['peak_ratio']:.2f}.",
        f"Ours in ONNX Runtime: {onnx['rss'] / 1e9:.2f} GB RSS (goal < {GOAL_BYTES / 1e9:.1f} GB: {onnx_verdict}), "
        f"{onnx['anon'] / 1e9:.2f} GB of it anonymous (sessions' weights, the process's heap); in ONNX Runtime: "
        f"{', '.join(in_onnx) or 'none'} (the exports were made and checked beforehand, in "
        f"{result['export_seconds']:.0f} s, into the cache this process reads).",
        f"Models kept by the pool: {', '.join(ours['kept'])}"
        + (f"; unloaded to fit its budget: {', '.join(ours['evicted'])}" if ours["evicted"] else "; none unloaded."),
        "File-backed pages are the mmap'd weights files: page cache the kernel can drop and re-read under pressure, "
        "shared by every process that maps the same file; the anonymous part is what cannot be reclaimed.",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--repeats", type=int, default=1, help="fresh processes per variant (median)")
    parser.add_argument("--threads", type=int, help="torch CPU threads in the children")
    parser.add_argument("--no-streamlit", action="store_true", help="do not import streamlit in the children")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "MODELS", "HUB"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        variant, models, hub_dir = args.child
        if variant == "prepare":
            result = _prepare(models.split(","), hub_dir)
        else:
            result = _child(variant, models.split(","), hub_dir, streamlit=not args.no_streamlit)
        print(RESULT_TAG + json.dumps(result), flush=True)
        return 0

    names = [name.strip() for name in args.models.split(",") if name.strip()]
    load_before = os.getloadavg()[0]
    result = bench(names, max(args.repeats, 1), args.threads, streamlit=not args.no_streamlit)
    print(report(result, args.markdown, args.threads, (load_before, os.getloadavg()[0])))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    run_report(main, "bench_memory")
