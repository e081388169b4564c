"""What embedding a set of images costs: embeddings per second against Classify's throughput for the same
model in the same run, and the peak memory of 2,000 images.

    python bench/bench_features.py [--model efficientnet_lite0] [--runtime auto] [--images 96] [--repeats 5]
                                   [--memory-images 2000] [--threads 1] [--markdown] [--json PATH]

Throughput, in this process, on --images JPEGs (random crops of the example photos and skimage's, 400 x 300,
quality 85), the model in the runtime the app would choose (ONNX Runtime on the CPU):

  (a) embed: `core.features.analysis.embed` (decode, the weights' transforms, the penultimate layer), batches of 32;
  (b) classify: `core.classify.predict.classify_files` on the same bytes, the same batch size (decode, transforms,
      logits, softmax, top-5): Classify's own throughput, the baseline.

Goal: a / b >= 0.9 images per second (an embedding costs what a classification costs). Runs alternate (a, b,
a, b, ...) after a warm-up so that a shared machine's noise falls on both; medians of --repeats. Times are the
process's CPU time with one thread (the work, not the waits for a core other jobs hold); the wall-clock ratio
of the same runs is shown beside it.

t-SNE: the time `core.features.analysis.project(..., "tsne")` takes for --tsne-sizes images (embeddings of the
throughput photos, repeated with a little noise to reach the size), against PCA on the same vectors: where
core.features.analysis.TSNE_MAX_IMAGES comes from (above it the page refuses t-SNE and says why; PCA maps any number).

Memory: a fresh process embeds --memory-images JPEGs read from a folder (core.datasets.sources.from_paths, one batch
in memory at a time) and reports its peak RSS; the baseline is a fresh process that embeds one batch (32
images) the same way: the difference is what the set itself costs (one 1280-number vector, 5 KB, per image).

A report, not a test: it always exits 0.
"""

from __future__ import annotations

import argparse
import atexit
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

from bench.report import run_report, table  # noqa: E402

BATCH = 32
GOAL = 0.9
SIZE = (400, 300)
MB = 2**20


def jpegs(count: int, seed: int = 0) -> list[bytes]:
    """`count` distinct photos: random crops of the example photos and skimage's, SIZE, quality 85."""
    import io

    import numpy as np
    from PIL import Image

    from tests.planted import photos

    rng = np.random.default_rng(seed)
    sources = [image for image in photos().values() if min(image.size) >= 200]
    found = []
    for i in range(count):
        image = sources[i % len(sources)]
        width, height = image.size
        scale = rng.uniform(0.6, 1.0)
        w, h = int(width * scale), int(height * scale)
        left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        buffer = io.BytesIO()
        image.crop((left, top, left + w, top + h)).resize(SIZE, Image.Resampling.BILINEAR).save(
            buffer, "JPEG", quality=85
        )
        found.append(buffer.getvalue())
    return found


def _timed(function) -> tuple[float, float]:
    """(process CPU seconds, wall seconds) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    function()
    return time.process_time() - cpu, time.perf_counter() - wall


def throughput(model, embedder, blobs: list[bytes], repeats: int) -> dict:
    from core.classify.predict import classify_files
    from core.datasets.sources import from_uploads
    from core.features.analysis import embed

    files = [(f"{i}.jpg", data) for i, data in enumerate(blobs)]

    def run_embed():
        embeddings = embed(embedder, from_uploads(files), batch_size=BATCH)
        assert len(embeddings) == len(files), embeddings.failures

    def run_classify():
        results = classify_files(model, files, k=5, batch_size=BATCH)
        assert all(hasattr(result, "predictions") for result in results)

    run_embed(), run_classify()  # warm-up: sessions, allocator, caches
    times = {"embed": [], "classify": []}
    for _ in range(repeats):
        times["embed"].append(_timed(run_embed))
        times["classify"].append(_timed(run_classify))
    result = {}
    for name, runs in times.items():
        cpu = statistics.median(run[0] for run in runs)
        wall = statistics.median(run[1] for run in runs)
        result[name] = {"cpu_s": cpu, "wall_s": wall, "ips": len(files) / cpu, "wall_ips": len(files) / wall}
    result["ratio"] = result["embed"]["ips"] / result["classify"]["ips"]
    result["wall_ratio"] = result["embed"]["wall_ips"] / result["classify"]["wall_ips"]
    return result


def tsne_times(embedder, blobs: list[bytes], sizes: list[int]) -> list[dict]:
    import numpy as np

    from core.datasets.sources import from_uploads
    from core.features.analysis import embed, project, unit_vectors

    base = embed(embedder, from_uploads([(f"{i}.jpg", data) for i, data in enumerate(blobs)])).vectors
    rng = np.random.default_rng(0)
    rows = []
    for size in sizes:
        vectors = base[np.arange(size) % len(base)] + rng.normal(0, 0.05, (size, base.shape[1])).astype(np.float32)
        unit = unit_vectors(vectors)
        pca, _ = _timed(lambda u=unit: project(u, "pca"))
        tsne = _timed(lambda u=unit: project(u, "tsne"))[1]
        rows.append({"images": size, "tsne_s": tsne, "pca_s": pca})
    return rows


def memory_child(folder: str, model_name: str, runtime: str | None, threads: int) -> None:
    """In a fresh process: embed every image in `folder` and print the peak RSS (JSON)."""
    import torch

    torch.set_num_threads(threads)
    from core.datasets.sources import from_paths
    from core.engines.choice import load_handle
    from core.features.analysis import embed
    from core.features.embedding import embedder_for
    from core.models.keys import ModelKey

    model = load_handle(ModelKey(model_name), runtime_choice=runtime)
    embedder = embedder_for(model.torch, runtime=model.runtime)
    sources = from_paths([folder])
    start = time.perf_counter()
    embeddings = embed(embedder, sources, batch_size=BATCH)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    print(
        json.dumps({"images": len(embeddings), "failures": len(embeddings.failures), "peak": peak, "seconds": seconds})
    )


def memory(blobs_for, counts: tuple[int, int], args) -> dict:
    """Peak RSS of a fresh process embedding counts[0] images (the baseline: one batch) and counts[1]."""
    result = {}
    for count in counts:
        folder = Path(tempfile.mkdtemp(prefix="zooscope-bench-features-"))
        try:
            for i, data in enumerate(blobs_for(count)):
                (folder / f"{i:05d}.jpg").write_bytes(data)
            command = [sys.executable, __file__, "--memory-child", str(folder), "--model", args.model]
            command += ["--threads", str(args.threads), *(["--runtime", args.runtime] if args.runtime else [])]
            done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
            result[str(count)] = json.loads(done.stdout.strip().splitlines()[-1])
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    small, big = (result[str(count)] for count in counts)
    result["growth"] = big["peak"] - small["peak"]
    result["ratio"] = big["peak"] / small["peak"]
    return result


def report(data: dict, markdown: bool) -> str:
    t = data["throughput"]
    lines = [
        f"{data['model']} ({data['runtime']}), {data['images']} JPEGs of {SIZE[0]} x {SIZE[1]}, batches of {BATCH}, "
        f"{data['threads']} thread(s); medians of {data['repeats']} alternating runs",
        "",
    ]
    rows = [
        [name, f"{t[key]['ips']:.1f}", f"{t[key]['wall_ips']:.1f}", f"{t[key]['cpu_s']:.2f}", f"{t[key]['wall_s']:.2f}"]
        for name, key in (
            ("embed (core.features.analysis.embed)", "embed"),
            ("classify (core.classify.predict.classify_files)", "classify"),
        )
    ]
    lines.append(table(["path", "images/s (CPU time)", "images/s (wall)", "CPU s", "wall s"], rows, markdown))
    verdict = "pass" if t["ratio"] >= GOAL else "MISS"
    lines += ["", f"embed / classify throughput: {t['ratio']:.3f} (CPU time), {t['wall_ratio']:.3f} (wall); "
              f"goal >= {GOAL}: {verdict}", ""]  # fmt: skip
    if data.get("tsne"):
        from core.features.analysis import TSNE_MAX_IMAGES

        rows = [[f"{r['images']:,}", f"{r['tsne_s']:.1f}", f"{r['pca_s']:.2f}"] for r in data["tsne"]]
        lines.append(table(["images", "t-SNE wall s", "PCA CPU s"], rows, markdown))
        lines += ["", f"t-SNE is refused above {TSNE_MAX_IMAGES:,} images (TSNE_MAX_IMAGES).", ""]
    if "memory" in data:
        m = data["memory"]
        small, big = m[str(data["memory_counts"][0])], m[str(data["memory_counts"][1])]
        rows = [
            [f"{small['images']:,} images (one batch)", f"{small['peak'] / MB:.0f}", f"{small['seconds']:.1f}"],
            [f"{big['images']:,} images", f"{big['peak'] / MB:.0f}", f"{big['seconds']:.1f}"],
        ]
        lines.append(table(["fresh process embedding", "peak RSS (MB)", "embedding time (s)"], rows, markdown))
        lines += ["", f"{big['images']:,} images cost {m['growth'] / MB:.0f} MB of peak RSS more than one batch "
                  f"({m['ratio']:.2f}x); failures: {big['failures']}"]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--runtime", default=None, help="auto (default), torch, onnx")
    parser.add_argument("--images", type=int, default=96, help="images per throughput run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tsne-sizes", default="1000,3000", help="comma-separated; empty: skip t-SNE")
    parser.add_argument("--memory-images", type=int, default=2000, help="0: skip the memory measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch (and ONNX Runtime) threads")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.model, args.runtime, args.threads)
        return
    import torch

    torch.set_num_threads(args.threads)
    cache = tempfile.mkdtemp(prefix="zooscope-bench-features-cache-")
    atexit.register(shutil.rmtree, cache, ignore_errors=True)  # the exports made for this run only
    os.environ.setdefault("ZOOSCOPE_CACHE_DIR", cache)
    from core.engines.choice import load_handle
    from core.features.embedding import embedder_for
    from core.models.keys import ModelKey

    model = load_handle(ModelKey(args.model), runtime_choice=args.runtime)
    embedder = embedder_for(model.torch, runtime=model.runtime)
    data = {
        "model": args.model,
        "runtime": f"classify: {model.runtime}, embed: {embedder.runtime}",
        "images": args.images,
        "repeats": args.repeats,
        "threads": args.threads,
        "goal": GOAL,
        "throughput": throughput(model, embedder, jpegs(args.images), args.repeats),
    }
    sizes = [int(size) for size in args.tsne_sizes.split(",") if size.strip()]
    data["tsne"] = tsne_times(embedder, jpegs(args.images), sizes) if sizes else []
    if args.memory_images:
        data["memory_counts"] = [BATCH, args.memory_images]
        data["memory"] = memory(lambda count: jpegs(count, seed=1), (BATCH, args.memory_images), args)
    print(report(data, args.markdown))
    if args.json:
        args.json.write_text(json.dumps(data))


if __name__ == "__main__":
    run_report(main, "bench_features.py")
