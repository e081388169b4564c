"""What classifying through `core` costs on top of the model's own forward pass.

    python bench/bench_classify.py [--models efficientnet_lite0,resnet50] [--runs 21] [--batches 1,8,32]
                                   [--batch-repeats 3] [--threads 1] [--markdown] [--json PATH]

Offline and self-contained: efficientnet_lite0 is the bundled model (real weights); any other model
gets random weights written under torchvision's real file name into a temporary hub cache and is
loaded through `core.models.loading.load_model` like the app does (forward time does not depend on values).

Two CPU figures per model, each against the bare forward `model.module(x)` under inference_mode on
a ready preprocessed tensor, measured in the same process, alternating the order on each repeat:

- warm classify of one photo: `core.classify.predict.classify_files(model, [(name, jpeg bytes)])`, i.e.
  decode + the weights' own preprocessing + forward + softmax + top-k, against the bare forward of
  that one image (goal: at most 1.15x). The pieces are timed apart to say where the rest goes.
- batch throughput: `core.classify.predict.classify_images` on decoded photos at batch 1, 8 and 32
  (preprocess + forward + top-k) against the bare forward at the same batch size, in images/s
  (goal: at least 1/1.15 = 0.87 of the bare throughput).

The runtimes table (`--runtime-models`, default efficientnet_lite0, mobilenet_v3_large, resnet50,
vit_b_16): warm classify of one photo in each runtime, PyTorch, ONNX Runtime fp32 and ONNX Runtime
int8, each model loaded through `core.engines.choice.load_handle` as the app does (exported, checked
against PyTorch and quantized on first use, into a temporary ZOOSCOPE_CACHE_DIR: that first use is
timed too), against two bare baselines on the same ready tensor in the same rotation of runs: the
bare eager forward `module(x)` and the bare ONNX Runtime session `session.run` (fp32, and int8).
Goals: through ONNX Runtime at most 0.4x the bare eager forward for efficientnet_lite0 and 0.6x for
resnet50, and within 1.15x of the bare session. int8's agreement with fp32 is the one measured when
it was made (on the check photos); for the models with random weights it says nothing (their
outputs are close to uniform), only their speed and size do.

With CUDA (or `--gpu-device`), a third table: throughput at batch 1 and 64 for resnet50 and
vit_b_16 in fp32 and bf16, through core (the model loaded by load_model with that precision:
channels-last CNN, preprocessing on the GPU, pinned copies) against the bare PyTorch forward of the
same weights in the same precision (a plain torchvision module on the GPU, NCHW, bf16 by autocast).

Medians throughout. Forwards are very sensitive to other work on a small machine: `--threads 1`
gives steadier figures. A report, not a test: it always exits 0.
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
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.classify_report import (  # noqa: E402
    GOAL_OVERHEAD,
    GOAL_THROUGHPUT,
    GOAL_VS_EAGER,
    GOAL_VS_SESSION,
    report,
)
from bench.fake_weights import use_hub, write_random_weights  # noqa: E402 (after the path setup)
from bench.report import run_report  # noqa: E402

EXAMPLES = ROOT / "assets" / "examples"
PHOTO = EXAMPLES / "coffee.jpg"  # 600x400 JPEG
GPU_MODELS = ("resnet50", "vit_b_16")
RUNTIME_MODELS = ("efficientnet_lite0", "mobilenet_v3_large", "resnet50", "vit_b_16")
GPU_BATCHES = (1, 64)


# The clock the ratios are taken on. "cpu" is this thread's CPU time (time.thread_time): with one
# torch thread every step (decode, preprocess, forward, top-k) runs in the calling thread, so it
# counts the work and not the time spent waiting for a core that other jobs hold, which on a
# shared machine is most of the noise. "wall" is time.perf_counter (always used with a GPU).
CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.thread_time, "wall": time.perf_counter}
_clock = {"name": "wall"}


def _seconds(function: Callable[[], object], sync: Callable[[], None] = lambda: None) -> float:
    now = CLOCKS[_clock["name"]]
    sync()
    start = now()
    function()
    sync()
    return now() - start


def _alternate(
    ours: Callable[[], object], bare: Callable[[], object], runs: int, warmup: int, sync=lambda: None
) -> tuple[list[float], list[float], float]:
    """Alternated timings of ours and bare on the chosen clock, and the wall-clock ratio of medians."""
    for _ in range(warmup):
        ours()
        bare()
    ours_s, bare_s, ours_wall, bare_wall = [], [], [], []

    def timed(function, into: list[float], wall: list[float]) -> None:
        start = time.perf_counter()
        into.append(_seconds(function, sync))
        wall.append(time.perf_counter() - start)

    for index in range(runs):
        if index % 2 == 0:
            timed(ours, ours_s, ours_wall)
            timed(bare, bare_s, bare_wall)
        else:
            timed(bare, bare_s, bare_wall)
            timed(ours, ours_s, ours_wall)
    return ours_s, bare_s, statistics.median(ours_wall) / statistics.median(bare_wall)


def _photos() -> list[tuple[str, bytes]]:
    return [(path.name, path.read_bytes()) for path in sorted(EXAMPLES.glob("*.jpg"))]


def bench_single(model, runs: int, warmup: int) -> dict:
    import torch

    from core.classify.predict import classify_files, preprocess, probabilities, top_k
    from core.images import decode_image

    data = PHOTO.read_bytes()
    files = [(PHOTO.name, data)]
    image = decode_image(data)
    x = preprocess(model, [image])

    def bare() -> None:
        with torch.inference_mode():
            model.module(x)

    ours_s, bare_s, wall_ratio = _alternate(lambda: classify_files(model, files, k=5), bare, runs, warmup)
    probs = probabilities(model, x)
    pieces = {
        "decode": statistics.median(_seconds(lambda: decode_image(data)) for _ in range(runs)),
        "preprocess": statistics.median(_seconds(lambda: preprocess(model, [image])) for _ in range(runs)),
        "top_k": statistics.median(_seconds(lambda: top_k(probs, model.categories, 5)) for _ in range(runs)),
    }
    ours, forward = statistics.median(ours_s), statistics.median(bare_s)
    return {
        "model": model.name,
        "image": f"{PHOTO.name} {image.width}x{image.height}",
        "ours_ms": ours * 1000,
        "bare_ms": forward * 1000,
        "ratio": ours / forward,
        "ratio_of_runs": statistics.median(a / b for a, b in zip(ours_s, bare_s, strict=True)),
        "wall_ratio": wall_ratio,
        "clock": _clock["name"],
        **{f"{key}_ms": value * 1000 for key, value in pieces.items()},
        "rest_ms": (ours - forward - sum(pieces.values())) * 1000,
        "runs": runs,
    }


def bench_batches(model, batches: list[int], repeats: int, warmup: int, sync=lambda: None, bare_module=None) -> list:
    import torch

    from core.classify.predict import classify_images, preprocess
    from core.images import decode_image
    from core.runtime import autocast

    photos = [decode_image(data) for _, data in _photos()]
    rows = []
    for batch in batches:
        images = [photos[i % len(photos)] for i in range(batch)]
        names = [f"{i}.jpg" for i in range(batch)]
        module = bare_module or model.module
        x = preprocess(model, images).to(model.device)
        if bare_module is not None:
            x = x.contiguous()  # the plain module takes plain NCHW input

        def bare(module=module, x=x) -> None:
            with torch.inference_mode(), autocast(model.device, model.precision):
                module(x)

        def ours(images=images, names=names) -> None:
            classify_images(model, images, names)

        ours_s, bare_s, wall_ratio = _alternate(ours, bare, repeats, warmup, sync)
        ours, forward = statistics.median(ours_s), statistics.median(bare_s)
        rows.append(
            {
                "model": model.name,
                "precision": model.precision,
                "batch": batch,
                "ours_ips": batch / ours,
                "bare_ips": batch / forward,
                "ratio": forward / ours,  # ours / bare throughput
                "wall_ratio": 1 / wall_ratio,
                "clock": _clock["name"],
                "repeats": repeats,
            }
        )
    return rows


def _rotate(runs: dict[str, Callable[[], object]], repeats: int, warmup: int) -> dict[str, dict[str, float]]:
    """Each callable timed `repeats` times, the order rotated on every repeat; medians on the chosen clock
    and on the wall clock, in ms."""
    for _ in range(warmup):
        for run in runs.values():
            run()
    names = list(runs)
    clock: dict[str, list[float]] = {name: [] for name in names}
    wall: dict[str, list[float]] = {name: [] for name in names}
    for index in range(repeats):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            clock[name].append(_seconds(runs[name]) * 1000)
            wall[name].append((time.perf_counter() - start) * 1000)
    return {name: {"ms": statistics.median(clock[name]), "wall_ms": statistics.median(wall[name])} for name in names}


def bench_runtimes(name: str, runs: int, warmup: int) -> dict:
    """Warm classify of one photo in PyTorch, ONNX Runtime fp32 and int8, against the bare eager forward
    and the bare sessions on the same ready tensor."""
    import torch

    from core.classify.predict import classify_files, preprocess
    from core.engines.choice import load_handle
    from core.images import decode_image
    from core.models.keys import ModelKey
    from core.models.loading import load_model

    files = [(PHOTO.name, PHOTO.read_bytes())]
    torch_model = load_model(name, "cpu")
    x = preprocess(torch_model, [decode_image(files[0][1])])
    row: dict = {"model": name, "runs": runs, "clock": _clock["name"]}
    calls: dict[str, Callable[[], object]] = {}

    def eager() -> None:
        with torch.inference_mode():
            torch_model.module(x)

    calls["eager"] = eager
    calls["torch"] = lambda: classify_files(torch_model, files, k=5)
    for engine in ("onnx", "int8"):
        start = time.perf_counter()
        model = load_handle(ModelKey(name), "cpu", runtime_choice=engine)
        row[f"{engine}_first_use_s"] = time.perf_counter() - start
        if model.runtime != engine:  # stayed on PyTorch (or fp32): nothing of this runtime to time
            row[f"{engine}_note"] = model.note or f"runs in {model.runtime}"
            continue
        bare = model.inference.session  # core.engines.sessions.SessionForward
        session, array = bare.session, x.numpy()
        feeds, outputs = {bare.input: array}, [bare.output]
        calls[f"session_{engine}"] = lambda session=session, feeds=feeds, outputs=outputs: session.run(outputs, feeds)
        calls[engine] = lambda model=model: classify_files(model, files, k=5)
        row[f"{engine}_mb"] = model.file_size_mb
        row[f"{engine}_report"] = dict(model.report)
        if engine == "int8":
            row["int8_verdict"] = model.int8_verdict()
    row["times"] = _rotate(calls, runs, warmup)
    row["torch_mb"] = torch_model.spec.file_size_mb
    return row


def bench_gpu(device: str, hub_dir: Path, batches: list[int], repeats: int, warmup: int) -> dict:
    """resnet50 and vit_b_16, fp32 and bf16, through core vs a plain torchvision module on the device."""
    import torch

    from core import runtime
    from core.models.building import read_state_dict
    from core.models.catalog import get_spec
    from core.models.loading import load_model
    from core.models.precision_check import bf16_check

    device_obj = torch.device(device)

    def sync() -> None:
        if device_obj.type == "cuda":
            torch.cuda.synchronize(device_obj)

    write_random_weights(list(GPU_MODELS), hub_dir)
    rows = []
    decisions = {}
    for name in GPU_MODELS:
        spec = get_spec(name)
        plain = spec.build().eval().requires_grad_(False)
        plain.load_state_dict(read_state_dict(hub_dir / "checkpoints" / spec.file_name))
        plain = plain.to(device_obj)
        decisions[name] = runtime.model_precision(
            spec.traits, device_obj, "auto", agreement=lambda: bf16_check(device_obj)
        )
        for precision in ("fp32", "bf16"):
            model = load_model(name, device_obj, precision=precision)
            print(f"  gpu table: {name} {precision}", file=sys.stderr, flush=True)
            rows += bench_batches(model, batches, repeats, warmup, sync, bare_module=plain)
            del model
        del plain
        if device_obj.type == "cuda":
            torch.cuda.empty_cache()
    agreement = bf16_check(device_obj) if device_obj.type == "cuda" else None
    return {
        "device": runtime.device_label(device_obj) if device_obj.type == "cuda" else str(device_obj),
        "rows": rows,
        "auto": decisions,
        "agreement": agreement,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="efficientnet_lite0,resnet50")
    parser.add_argument("--runs", type=int, default=21, help="alternated runs for the one-photo figure (median)")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--batch-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--gpu-device", help="device for the accelerator table (default: cuda when available)")
    parser.add_argument("--gpu-batches", default=",".join(map(str, GPU_BATCHES)))
    parser.add_argument("--gpu-repeats", type=int, default=10)
    parser.add_argument("--skip-cpu", action="store_true", help="only the accelerator table")
    parser.add_argument("--runtime-models", default=",".join(RUNTIME_MODELS), help="the runtimes table ('' skips it)")
    parser.add_argument("--runtime-runs", type=int, default=15, help="rotated runs per figure of the runtimes table")
    parser.add_argument(
        "--clock",
        choices=("auto", "cpu", "wall"),
        default="auto",
        help="CPU tables: thread CPU time or wall time (auto: CPU time with --threads 1, else wall)",
    )
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    parser.add_argument("--json", type=Path, help="also write every measurement to this JSON file")
    args = parser.parse_args(argv)

    import torch

    from core.models.loading import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    single_thread = torch.get_num_threads() == 1
    _clock["name"] = ("cpu" if single_thread else "wall") if args.clock == "auto" else args.clock
    load_before = os.getloadavg()[0]
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    runtime_names = [name.strip() for name in args.runtime_models.split(",") if name.strip()]
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    hub_dir = Path(tempfile.mkdtemp(prefix="zooscope-bench-classify-")) / "hub"
    os.environ["ZOOSCOPE_CACHE_DIR"] = str(hub_dir.parent / "zooscope-cache")  # exports made in this run
    results: dict = {"single": [], "batches": [], "runtimes": []}
    try:
        write_random_weights(sorted(set(names) | set(runtime_names)), hub_dir)
        use_hub(hub_dir)
        if not args.skip_cpu:
            for name in names:
                print(f"benchmarking {name} ...", file=sys.stderr, flush=True)
                model = load_model(name, "cpu")
                results["single"].append(bench_single(model, max(args.runs, 1), warmup=3))
                results["batches"] += bench_batches(model, batches, max(args.batch_repeats, 1), warmup=1)
                del model
            for name in runtime_names:
                print(f"runtimes: {name} ...", file=sys.stderr, flush=True)
                results["runtimes"].append(bench_runtimes(name, max(args.runtime_runs, 1), warmup=2))
        gpu_device = args.gpu_device or ("cuda" if torch.cuda.is_available() else None)
        cpu_clock = _clock["name"]
        if gpu_device:
            _clock["name"] = "wall"  # GPU work is not this thread's CPU time
            gpu_batches = [int(b) for b in args.gpu_batches.split(",") if b.strip()]
            results["gpu"] = bench_gpu(gpu_device, hub_dir, gpu_batches, max(args.gpu_repeats, 1), warmup=3)
    finally:
        shutil.rmtree(hub_dir.parent, ignore_errors=True)
    results["setup"] = {
        "threads": torch.get_num_threads(),
        "load": (load_before, os.getloadavg()[0]),
        "runs": args.runs,
        "batch_repeats": args.batch_repeats,
        "runtime_runs": args.runtime_runs,
        "goal_vs_eager": GOAL_VS_EAGER,
        "goal_vs_session": GOAL_VS_SESSION,
        "clock": cpu_clock,
        "goal_overhead": GOAL_OVERHEAD,
        "goal_throughput": GOAL_THROUGHPUT,
    }
    print(report(results, args.markdown))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    run_report(main, "bench_classify")
