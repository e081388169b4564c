"""What Inside costs: each model's anatomy (cold and warm), and the stage maps of one photo
against one plain forward pass of it.

    python bench/bench_inside.py [--models all|resnet50,...] [--maps-models resnet50,...] [--repeats 7]
                                 [--threads 1] [--markdown] [--json PATH]

Anatomy, for every catalogue model (or --models), in this one process:

  (a) cold: the first `core.inside.anatomy.anatomy(name)`: build on the meta device, trace it with
      torch.fx and run the graph once under torch's FlopCounterMode (shapes, FLOPs, skips,
      receptive fields, where each module ran);
  (b) the floor it cannot avoid: building the same model on the meta device and one FlopCounterMode
      forward (what counting the FLOPs alone takes);
  (c) warm: the second call (functools.cache; goal: well under a second, here < 1 ms).

Stage maps, for the bundled efficientnet_lite0 (real weights) and optionally --maps-models
(torchvision architectures with random weights, written to a temporary hub as bench_compare.py
does), on the repo's chelsea.jpg:

  (d) `core.inside.stage_maps.stage_maps(model, photo)`: preprocessing, a forward through a private view
      with a hook on every stage, each stage's mean map and top channels, the top-1;
  (e) one plain forward pass of the same photo: the same preprocessing (core.preprocessing) and
      `model.forward`, as Classify runs it.

Goal: d / e <= 1.5 (medians of --repeats after a warm-up; the view is built once, on the first
call, and timed apart as "first call"). With one torch thread the ratio is of this thread's CPU
time (the work, not the waits for a core other jobs hold, as bench_classify.py does); the
wall-clock ratio of the same runs is shown beside it.

A report, not a test: it always exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.fake_weights import use_hub, write_random_weights  # noqa: E402 (after the path setup)
from bench.report import run_report, table  # noqa: E402

PHOTO = ROOT / "assets" / "examples" / "chelsea.jpg"
GOAL_MAPS = 1.5
GOAL_WARM_MS = 1.0


def _seconds(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def bench_anatomy(names: list[str]) -> list[dict]:
    import torch

    from core.inside.anatomy import _on_meta, anatomy
    from core.inside.meta_trace import FlopCounter
    from core.models.catalog import get_spec

    rows = []
    for name in names:
        spec = get_spec(name)

        def floor(spec=spec) -> None:
            model = _on_meta(spec)
            with FlopCounter(), torch.no_grad():
                model(torch.zeros(1, 3, spec.input_size, spec.input_size, device="meta"))

        floor_s = _seconds(floor)
        cold_s = _seconds(lambda name=name: anatomy(name))
        warm_s = min(_seconds(lambda name=name: anatomy(name)) for _ in range(5))
        rows.append({"model": name, "cold_s": cold_s, "floor_s": floor_s, "warm_ms": warm_s * 1000})
        print(f"  {name}: cold {cold_s:.2f} s", file=sys.stderr, flush=True)
    return rows


def bench_maps(model, repeats: int) -> dict:
    import torch
    from PIL import Image

    from core import preprocessing
    from core.inside.stage_maps import stage_maps

    image = Image.open(PHOTO).convert("RGB")

    def plain() -> None:
        model.forward(preprocessing.model_batch([image], model.preprocess))

    def maps() -> None:
        stage_maps(model, image)

    first_s = _seconds(maps)  # builds the private view (and the anatomy, if not yet)
    plain()
    runs: dict[str, list[float]] = {"maps": [], "plain": [], "maps_cpu": [], "plain_cpu": []}
    for index in range(repeats):
        order = (("maps", maps), ("plain", plain)) if index % 2 == 0 else (("plain", plain), ("maps", maps))
        for key, function in order:
            wall, cpu = time.perf_counter(), time.thread_time()
            function()
            runs[f"{key}_cpu"].append((time.thread_time() - cpu) * 1000)
            runs[key].append((time.perf_counter() - wall) * 1000)
    median = {key: statistics.median(values) for key, values in runs.items()}
    cpu = torch.get_num_threads() == 1  # thread CPU time counts all the work only with one torch thread
    ratio_wall = median["maps"] / median["plain"]
    return {
        "model": model.name,
        "clock": "thread CPU" if cpu else "wall",
        "maps_ms": median["maps_cpu" if cpu else "maps"],
        "plain_ms": median["plain_cpu" if cpu else "plain"],
        "ratio": median["maps_cpu"] / median["plain_cpu"] if cpu else ratio_wall,
        "ratio_wall": ratio_wall,
        "first_call_ms": first_s * 1000,
        "maps_runs": runs["maps"],
        "plain_runs": runs["plain"],
    }


def report(anatomies: list[dict], maps: list[dict], args: argparse.Namespace, load: tuple[float, float]) -> str:
    import torch

    cold = sum(row["cold_s"] for row in anatomies)
    floor = sum(row["floor_s"] for row in anatomies)
    warm = max(row["warm_ms"] for row in anatomies)
    slowest = sorted(anatomies, key=lambda row: row["cold_s"], reverse=True)[:5]
    out = [
        f"Inside: anatomy of {len(anatomies)} models and stage maps of {PHOTO.name}; CPU, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs, load average {load[0]:.1f} -> {load[1]:.1f}.",
        "",
        table(
            ["anatomy", "(a) cold s", "(b) meta build + FLOP count s", "a/b", "(c) warm, slowest µs"],
            [[f"{len(anatomies)} models", f"{cold:.1f}", f"{floor:.1f}", f"{cold / floor:.2f}", f"{warm * 1000:.1f}"]],
            args.markdown,
        ),
        "",
        "Slowest cold: " + ", ".join(f"{row['model']} {row['cold_s']:.2f} s" for row in slowest) + ".",
        "",
        table(
            [
                "stage maps",
                "clock",
                "(d) maps ms",
                "(e) plain forward ms",
                "d/e",
                f"goal <= {GOAL_MAPS}",
                "d/e wall",
                "first call ms (wall)",
            ],
            [
                [
                    row["model"],
                    row["clock"],
                    f"{row['maps_ms']:.1f}",
                    f"{row['plain_ms']:.1f}",
                    f"{row['ratio']:.3f}",
                    "met" if row["ratio"] <= GOAL_MAPS else "NOT met",
                    f"{row['ratio_wall']:.3f}",
                    f"{row['first_call_ms']:.0f}",
                ]
                for row in maps
            ],
            args.markdown,
        ),
        "",
        "(a) the first anatomy(name) per model: meta build, fx trace, the graph run once under FlopCounterMode; "
        "(b) only the meta build and one FlopCounterMode forward of the module; (c) the cached second call.",
        "(d) stage_maps(model, photo): preprocessing + a forward through a private view with stage hooks + maps; "
        "(e) the same preprocessing + model.forward. First call: (d) building its private view once.",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="all", help="models whose anatomy to time: all, or comma-separated")
    parser.add_argument("--maps-models", default="", help="torchvision models (random weights) for stage maps too")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--markdown", action="store_true", help="print the tables as markdown")
    parser.add_argument("--json", type=Path, help="also write every measurement to this JSON file")
    args = parser.parse_args(argv)

    import torch

    from core.models.catalog import all_specs
    from core.models.loading import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    names = sorted(all_specs()) if args.models == "all" else [n.strip() for n in args.models.split(",") if n.strip()]
    print(f"anatomy of {len(names)} models ...", file=sys.stderr, flush=True)
    anatomies = bench_anatomy(names)

    extra = [name.strip() for name in args.maps_models.split(",") if name.strip()]
    torch_home = Path(tempfile.mkdtemp(prefix="zooscope-bench-inside-"))
    try:
        write_random_weights(extra, torch_home / "hub")
        use_hub(torch_home / "hub")
        models = [load_model("efficientnet_lite0"), *(load_model(name) for name in extra)]
        maps = []
        for model in models:
            print(f"stage maps of {model.name} ...", file=sys.stderr, flush=True)
            maps.append(bench_maps(model, max(1, args.repeats)))
    finally:
        shutil.rmtree(torch_home, ignore_errors=True)
    print(report(anatomies, maps, args, (load_before, os.getloadavg()[0])))
    if args.json:
        summary = {"goal_maps": GOAL_MAPS, "goal_warm_ms": GOAL_WARM_MS}
        args.json.write_text(json.dumps({**summary, "anatomy": anatomies, "maps": maps}))
    return 0


if __name__ == "__main__":
    run_report(main, "bench_inside")
