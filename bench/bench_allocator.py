"""What `make run`'s glibc malloc settings (malloc.env) buy, against glibc's defaults.

    python bench/bench_allocator.py [--models efficientnet_lite0,resnet50] [--batch 16] [--repeats 5]
                                    [--threads 1] [--markdown] [--json PATH]

glibc reads MALLOC_* only when a process starts, so each variant runs in a fresh child process:
(a) glibc's defaults (any MALLOC_* in this environment removed) and (b) the settings in
malloc.env, which `make run` starts the app with. The child works as the app does: page code
runs in a thread Streamlit starts (so earlier threads have already left arenas behind), the
models load through `core.models.loading.load_model` (efficientnet_lite0 is bundled; any other model
gets random weights written to a temporary hub cache, as in bench_classify.py), and each
measures `core.classify.predict.classify_images` on the example photos at batch 1 and at `--batch`.

Reported per variant: images/s (median of --repeats after a warm-up) and resident memory after
the run and at its peak. A report, not a test: it always exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
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

MALLOC_ENV = ROOT / "malloc.env"


def malloc_settings(path: Path = MALLOC_ENV) -> dict[str, str]:
    """KEY=VALUE lines of malloc.env (comments and blank lines skipped)."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line.strip() and "=" in line)
    return {key.strip(): value.strip() for key, value in pairs if not key.lstrip().startswith("#")}


# --------------------------------------------------------------------------- child


def _child(args: argparse.Namespace) -> dict:
    import threading

    import psutil
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    def leave_arenas() -> None:  # what Streamlit's server threads have done before a page runs
        bytearray(8 << 20)
        torch.zeros(512, 512)

    for _ in range(3):
        thread = threading.Thread(target=leave_arenas)
        thread.start()
        thread.join()

    from bench.bench_classify import _photos
    from bench.fake_weights import use_hub, write_random_weights
    from core.classify.predict import classify_images
    from core.images import decode_image
    from core.models.loading import load_model

    names = [name.strip() for name in args.models.split(",") if name.strip()]
    hub = Path(args.hub)
    write_random_weights(names, hub)
    use_hub(hub)
    photos = [decode_image(data) for _, data in _photos()]
    results: dict = {"models": {}}

    def page() -> None:
        for name in names:
            model = load_model(name, "cpu")
            rates = {}
            for batch in (1, args.batch):
                images = [photos[i % len(photos)] for i in range(batch)]
                labels = [f"{i}.jpg" for i in range(batch)]
                classify_images(model, images, labels)  # warm-up
                seconds = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    classify_images(model, images, labels)
                    seconds.append(time.perf_counter() - start)
                rates[batch] = batch / statistics.median(seconds)
            results["models"][name] = rates
            del model

    worker = threading.Thread(target=page)  # as Streamlit runs a page: in a new thread
    worker.start()
    worker.join()
    process = psutil.Process()
    results["rss"] = process.memory_info().rss
    import resource

    results["peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return results


# --------------------------------------------------------------------------- parent


def run_variant(settings: dict[str, str], args: argparse.Namespace, hub: Path) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}
    env.update(settings)
    env["PYTHONPATH"] = str(ROOT)
    command = [
        sys.executable,
        __file__,
        "--child",
        "--hub",
        str(hub),
        "--models",
        args.models,
        "--batch",
        str(args.batch),
        "--repeats",
        str(args.repeats),
    ]
    if args.threads:
        command += ["--threads", str(args.threads)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(data: dict, markdown: bool) -> str:
    default, tuned = data["default"], data["tuned"]
    rows = []
    for name in default["models"]:
        for batch in sorted({int(b) for b in default["models"][name]}):
            before, after = default["models"][name][str(batch)], tuned["models"][name][str(batch)]
            rows.append([name, str(batch), f"{before:.1f}", f"{after:.1f}", f"{after / before:.2f}x"])
    memory = [
        [
            label,
            f"{default[key] / 2**20:.0f}",
            f"{tuned[key] / 2**20:.0f}",
            f"{(tuned[key] - default[key]) / 2**20:+.0f}",
        ]
        for label, key in (("RSS after the run", "rss"), ("peak RSS", "peak"))
    ]
    settings = " ".join(f"{key}={value}" for key, value in data["settings"].items())
    return "\n".join(
        [
            f"classify_images in a page-like thread; {data['threads'] or 'default'} torch thread(s); "
            f"median of {data['repeats']} runs; load average {data['load'][0]:.1f} -> {data['load'][1]:.1f}.",
            f"(a) glibc defaults; (b) malloc.env as `make run` uses it: {settings}",
            "",
            table(["model", "batch", "(a) img/s", "(b) img/s", "b / a"], rows, markdown),
            "",
            table(["memory", "(a) MB", "(b) MB", "b - a"], memory, markdown),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="efficientnet_lite0,resnet50")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--hub", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args)))
        return 0

    load_before = os.getloadavg()[0]
    settings = malloc_settings()
    with tempfile.TemporaryDirectory(prefix="zooscope-bench-allocator-") as folder:
        hub = Path(folder) / "hub"
        print("benchmarking glibc defaults ...", file=sys.stderr, flush=True)
        default = run_variant({}, args, hub)
        print("benchmarking malloc.env ...", file=sys.stderr, flush=True)
        tuned = run_variant(settings, args, hub)
    data = {
        "default": default,
        "tuned": tuned,
        "settings": settings,
        "threads": args.threads,
        "repeats": args.repeats,
        "batch": args.batch,
        "load": (load_before, os.getloadavg()[0]),
    }
    print(report(data, args.markdown))
    if args.json:
        args.json.write_text(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    run_report(main, "bench_allocator")
