"""How much faster and leaner `core.models.loading.load_model` is than torchvision's standard load.

    python bench/bench_load.py [--models vgg16,resnet50,efficientnet_b0,vit_b_16] [--repeats 3] [--markdown]

Offline and self-contained: for each model it writes a weights file itself (the architecture's
freshly initialised state dict, saved under torchvision's real file name) into a temporary
TORCH_HOME, then loads it in fresh subprocesses, alternating the order:

- baseline: `torchvision.models.get_model(name, weights="DEFAULT")`, which finds the file in the
  hub cache (torchvision does not re-hash a cached file);
- ours: `core.models.loading.load_model(name)` (meta-device build, mmap'd `torch.load`, `assign=True`).

Each variant runs `--repeats` times; the table shows medians. Figures per load call: wall time,
and peak RSS growth (the exact `ru_maxrss` peak when the call sets a new process peak, else the
peak of a 5 ms RSS sampler). A last subprocess loads both and checks that their logits on one
random input are identical. Ratios: speedup = baseline time / our time (goal >= 5x for vgg16);
memory ratio = peak RSS growth / file size (goal <= 1.2 for ours). If `load_model` runs a warm-up
forward pass (`core.models.loading.warm_up`), its time is also shown apart ("without warm-up").

Forward passes are very sensitive to other work on a small machine (torch's OpenMP threads wait
on each other): `--threads 1` gives steadier figures there.

A report, not a test: it always exits 0.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.fake_weights import use_hub, write_random_weights  # noqa: E402 (after the path setup)
from bench.report import run_report, table  # noqa: E402

DEFAULT_MODELS = "vgg16"
VARIANTS = ("torchvision", "zooscope")
GOALS = {"speedup": 5.0, "memory_ratio": 1.2}  # speedup goal is stated for vgg16
RESULT_TAG = "BENCH_RESULT "
MB = 2**20
_PAGE = os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------------- child side


def _statm() -> tuple[int, int]:
    """(resident, file-backed resident) bytes of this process, cheaply, from /proc/self/statm."""
    with open("/proc/self/statm") as handle:
        fields = handle.read().split()
    return int(fields[1]) * _PAGE, int(fields[2]) * _PAGE


def _max_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


class _RssSampler(threading.Thread):
    """Samples RSS (and its anonymous part) every few ms; the peaks are lower bounds of the true peaks."""

    def __init__(self, interval: float = 0.005):
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = self.peak_anon = 0
        self._stop_event = threading.Event()

    def _sample(self) -> None:
        resident, file_backed = _statm()
        self.peak = max(self.peak, resident)
        self.peak_anon = max(self.peak_anon, resident - file_backed)

    def run(self) -> None:
        while not self._stop_event.is_set():
            self._sample()
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self._sample()


def _prepare_child(torch_home: str) -> None:
    import torch

    if threads := os.environ.get("BENCH_TORCH_THREADS"):
        torch.set_num_threads(int(threads))

    assert os.environ.get("TORCH_HOME") == torch_home
    # Random weights this script made skip our hash check; its cost (once per file per process)
    # is reported separately by the parent as "hash".
    use_hub(Path(torch_home) / "hub")


def _load(variant: str, name: str, timings: dict | None = None):
    import torchvision

    import core.models.loading

    if variant == "torchvision":
        return torchvision.models.get_model(name, weights="DEFAULT").eval()
    warm_up = getattr(core.models.loading, "warm_up", None)
    if warm_up is not None and timings is not None:
        # load_model runs one forward pass at load time: time it, to report it apart.
        def timed_warm_up(*args, **kwargs):
            start = time.perf_counter()
            try:
                return warm_up(*args, **kwargs)
            finally:
                timings["warm_up_seconds"] = time.perf_counter() - start

        core.models.loading.warm_up = timed_warm_up
    return core.models.loading.load_model(name).module


def _child_measure(variant: str, name: str, torch_home: str) -> dict:
    _prepare_child(torch_home)
    import torch

    from core.models.catalog import get_spec

    size = get_spec(name).input_size
    timings: dict = {}
    gc.collect()
    rss_before, file_before = _statm()
    max_before = _max_rss()
    sampler = _RssSampler()
    sampler.start()
    start = time.perf_counter()
    model = _load(variant, name, timings)
    seconds = time.perf_counter() - start
    sampler.stop()
    max_after = _max_rss()
    # ru_maxrss is the exact lifetime peak: exact for this call only if the call raised it.
    peak = max_after if max_after > max_before else sampler.peak
    rss_loaded, file_loaded = _statm()

    start = time.perf_counter()
    with torch.inference_mode():
        model(torch.randn(1, 3, size, size))
    forward_seconds = time.perf_counter() - start
    rss_forward, file_forward = _statm()
    return {
        "seconds": seconds,
        "warm_up_seconds": timings.get("warm_up_seconds", 0.0),
        "next_forward_seconds": forward_seconds,
        "peak_growth": peak - rss_before,
        "peak_source": "ru_maxrss" if max_after > max_before else "sampler",
        "peak_anon_growth": sampler.peak_anon - (rss_before - file_before),
        "loaded_growth": rss_loaded - rss_before,
        "loaded_file_growth": file_loaded - file_before,
        "forward_growth": rss_forward - rss_before,
        "forward_file_growth": file_forward - file_before,
    }


def _child_check(name: str, torch_home: str) -> dict:
    _prepare_child(torch_home)
    import torch

    from core.models.catalog import get_spec

    size = get_spec(name).input_size
    baseline = _load("torchvision", name)
    ours = _load("zooscope", name)
    generator = torch.Generator().manual_seed(0)
    batch = torch.randn(1, 3, size, size, generator=generator)
    with torch.inference_mode():
        expected, actual = baseline(batch), ours(batch)
    return {"identical": torch.equal(expected, actual), "max_abs_diff": (expected - actual).abs().max().item()}


# --------------------------------------------------------------------------- parent side


def _run_child(args: list[str], torch_home: str, threads: int | None = None) -> dict:
    env = dict(os.environ, TORCH_HOME=torch_home, ZOOSCOPE_OFFLINE="1")
    if threads:
        env["BENCH_TORCH_THREADS"] = str(threads)
    env.pop("ZOOSCOPE_WEIGHTS_DIR", None)  # only the file in the temporary hub may be found
    command = [sys.executable, str(Path(__file__).resolve()), "--child", *args, "--torch-home", torch_home]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG) :])
    tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
    raise RuntimeError(f"child {args} exited {done.returncode}: " + " | ".join(tail))


def _write_weights(name: str, torch_home: Path) -> Path:
    return write_random_weights([name], torch_home / "hub")[name]


def _sha256_seconds(path: Path) -> float:
    """What our hash check adds to the first load of a real file in a process (page cache warm)."""
    start = time.perf_counter()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return time.perf_counter() - start


def bench_model(name: str, repeats: int, threads: int | None = None) -> dict:
    torch_home = Path(tempfile.mkdtemp(prefix="zooscope-bench-"))
    try:
        path = _write_weights(name, torch_home)
        file_size = path.stat().st_size
        hash_seconds = _sha256_seconds(path)  # also leaves the file in the page cache for both
        runs: dict[str, list[dict]] = {variant: [] for variant in VARIANTS}
        for index in range(repeats):
            order = VARIANTS if index % 2 == 0 else VARIANTS[::-1]
            for variant in order:
                runs[variant].append(_run_child(["measure", variant, name], str(torch_home), threads))
        check = _run_child(["check", "-", name], str(torch_home), threads)
    finally:
        shutil.rmtree(torch_home, ignore_errors=True)

    result: dict = {"model": name, "file_name": path.name, "file_size": file_size, "hash_seconds": hash_seconds}
    medians = (
        "seconds",
        "warm_up_seconds",
        "next_forward_seconds",
        "peak_growth",
        "peak_anon_growth",
        "loaded_file_growth",
        "forward_growth",
        "forward_file_growth",
    )
    for variant, variant_runs in runs.items():
        result[variant] = {key: statistics.median(run[key] for run in variant_runs) for key in medians}
        result[variant]["runs"] = variant_runs
        result[variant]["memory_ratio"] = result[variant]["peak_growth"] / file_size
    result["speedup"] = result["torchvision"]["seconds"] / result["zooscope"]["seconds"]
    # load_model may run a warm-up forward pass (core.models.loading.warm_up): the load path without it.
    ours = result["zooscope"]
    ours["load_only_seconds"] = statistics.median(run["seconds"] - run["warm_up_seconds"] for run in runs["zooscope"])
    result["load_only_speedup"] = result["torchvision"]["seconds"] / ours["load_only_seconds"]
    result.update(check)
    return result


# --------------------------------------------------------------------------- report


def _rows(results: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = [
        "model",
        "file MB",
        "torchvision s",
        "ours s",
        "speedup",
        "ours without warm-up s",
        "speedup without warm-up",
        "torchvision peak MB",
        "ours peak MB",
        "torchvision mem ratio",
        "ours mem ratio",
        "logits identical",
    ]
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["model"], "error: " + r["error"]] + [""] * (len(header) - 2))
            continue
        tv, ours = r["torchvision"], r["zooscope"]
        rows.append(
            [
                r["model"],
                f"{r['file_size'] / MB:.1f}",
                f"{tv['seconds']:.3f}",
                f"{ours['seconds']:.3f}",
                f"{r['speedup']:.1f}x",
                f"{ours['load_only_seconds']:.3f}",
                f"{r['load_only_speedup']:.0f}x",
                f"{tv['peak_growth'] / MB:.1f}",
                f"{ours['peak_growth'] / MB:.1f}",
                f"{tv['memory_ratio']:.2f}",
                f"{ours['memory_ratio']:.3f}",
                "yes" if r["identical"] else f"NO (max |diff| {r['max_abs_diff']:.3g})",
            ]
        )
    return header, rows


def report(results: list[dict], repeats: int, markdown: bool, load_before: float, threads: int | None) -> str:
    import platform

    import torch
    import torchvision

    out = [
        f"Load benchmark: median of {repeats} fresh subprocesses per variant, page cache warm, CPU, "
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs ({threads or 'default'} torch threads), "
        f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} "
        "(other work on the machine slows the forward passes most).",
        "",
        table(*_rows(results), markdown),
        "",
        f"speedup = torchvision s / ours s (goal >= {GOALS['speedup']:g}x for vgg16); "
        f"mem ratio = peak RSS growth during the load call / file size (goal <= {GOALS['memory_ratio']:g} for ours).",
    ]
    for r in results:
        if "error" in r:
            continue
        tv, ours = r["torchvision"], r["zooscope"]
        goal_speed = "met" if r["speedup"] >= GOALS["speedup"] else "NOT met"
        goal_memory = "met" if ours["memory_ratio"] <= GOALS["memory_ratio"] else "NOT met"
        runs = {v: " ".join(f"{run['seconds']:.3f}" for run in r[v]["runs"]) for v in VARIANTS}
        # Like for like: torchvision's load plus its first forward, against ours (whose load already
        # includes a warm-up forward) plus its next one.
        tv_first = tv["seconds"] + tv["next_forward_seconds"]
        ours_first = ours["seconds"] + ours["next_forward_seconds"]
        out += [
            "",
            f"{r['model']} ({r['file_name']}): speedup {r['speedup']:.1f}x ({goal_speed}), "
            f"our memory ratio {ours['memory_ratio']:.3f} ({goal_memory}), "
            f"torchvision's {tv['memory_ratio']:.2f}; logits identical: {r['identical']}.",
            f"  runs (s): torchvision {runs['torchvision']}; ours {runs['zooscope']}",
        ]
        if ours["warm_up_seconds"]:
            out.append(
                f"  our load includes load_model's warm-up forward ({ours['warm_up_seconds']:.3f} s); "
                f"load + first forward: torchvision {tv_first:.3f} s, ours {ours_first:.3f} s "
                f"({tv_first / ours_first:.1f}x)."
            )
        out += [
            f"  our peak growth by kind: anonymous {ours['peak_anon_growth'] / MB:.0f} MB, file-backed mmap "
            f"{ours['loaded_file_growth'] / MB:.0f} MB (page cache: shared between processes, reclaimable); "
            f"torchvision's is all anonymous.",
            f"  not included above: our first load of a real file in a process also checks its SHA-256 "
            f"({r['hash_seconds']:.2f} s for this file, warm cache); torchvision does not re-check cached files.",
        ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated torchvision model names")
    parser.add_argument("--repeats", type=int, default=3, help="fresh subprocesses per variant (median)")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    parser.add_argument("--threads", type=int, help="torch CPU threads in the children (default: torch's own choice)")
    parser.add_argument("--json", type=Path, help="also write every measurement to this JSON file")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "VARIANT", "MODEL"), help=argparse.SUPPRESS)
    parser.add_argument("--torch-home", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        mode, variant, name = args.child
        if mode == "measure":
            result = _child_measure(variant, name, args.torch_home)
        else:
            result = _child_check(name, args.torch_home)
        print(RESULT_TAG + json.dumps(result), flush=True)
        return 0

    load_before = os.getloadavg()[0]
    results = []
    for name in [model.strip() for model in args.models.split(",") if model.strip()]:
        print(f"benchmarking {name} ...", file=sys.stderr, flush=True)
        try:
            results.append(bench_model(name, max(1, args.repeats), args.threads))
        except Exception as error:  # a report: note the failure, go on with the other models
            results.append({"model": name, "error": f"{type(error).__name__}: {error}"})
    print(report(results, max(1, args.repeats), args.markdown, load_before, args.threads))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    run_report(main, "bench_load")
