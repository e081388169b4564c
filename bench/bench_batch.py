"""`python -m core batch` on this machine: the local engine against Ray Data, in images per second.

    python bench/bench_batch.py [--images 1000] [--size 640x480] [--model efficientnet_lite0]
                                [--batch-size 16] [--small 32] [--markdown] [--json PATH]

`--images` generated JPEGs (bench_batch_memory.make_photos: real photos shifted, mirrored, with noise,
at `--size`) in a temporary folder, classified with the same model in the same runtime (ONNX Runtime
on the CPU, its export made first into a temporary cache and not timed) by:

- local, 1 thread: the local engine on one thread: the most one Ray actor (one CPU) can do;
- local: the local engine as the command runs it, as many threads as this process may use CPUs;
- ray: a local Ray on the same CPUs, one actor per CPU, timed from the start of the run (Ray itself
  already started: `ray.init` is timed apart) to the last Parquet file written, so it includes the
  actors' start (each imports torch and loads the model);
- ray, small run: the same on `--small` images: the fixed cost of a run, so that
  (images - small) / (its time - the small run's time) is Ray's steady rate.

Then the figures the scaling section of BENCHMARKS.md works from: a fresh process's resident memory
once the model is loaded and after one batch (what each actor holds), and its peak, and the time of one
image's decode and preprocessing against its share of a batch's forward, on one thread.

A report, not a test: it always exits 0.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
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

MB = 2**20

MEMORY_PROBE = """
import json, resource, sys, psutil, torch
torch.set_num_threads(1)
from core.batch.local import _read_chunk
from core.batch.sources import list_source
from core.batch.work import BatchJob, BatchWorker
job = BatchJob("classify", sys.argv[1], batch_size=int(sys.argv[3]))
process = psutil.Process()
imported = process.memory_info().rss
worker = BatchWorker(job)
loaded = process.memory_info().rss
listing = list_source(sys.argv[2])
worker(_read_chunk(listing, [(path, True) for path in listing.files[: job.batch_size]]))
working = process.memory_info().rss
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"imported": imported, "loaded": loaded, "working": working, "peak": peak}))
"""


def write_photos(folder: Path, count: int, width: int, height: int) -> int:
    """`count` different JPEGs in `folder`; returns their total size in bytes."""
    from bench.bench_batch_memory import make_photos

    total = 0
    for name, data in make_photos(count, width, height):
        (folder / name).write_bytes(data)
        total += len(data)
    return total


def time_local(job, folder: Path, out: Path, threads: int) -> dict:
    import torch

    from core.batch.local import run_local
    from core.batch.output import prepare_output
    from core.batch.sources import list_source
    from core.batch.work import BatchWorker

    torch.set_num_threads(threads)  # ONNX Runtime's session takes torch's count when it is made
    start = time.perf_counter()
    worker = BatchWorker(job)
    load = time.perf_counter() - start
    listing = list_source(str(folder))
    output = prepare_output(str(out), job, resume=False)
    start = time.perf_counter()
    rows = run_local(worker, listing, output)
    seconds = time.perf_counter() - start
    return {"threads": threads, "runtime": worker.runtime, "load_s": load, "seconds": seconds, "ips": rows / seconds}


def time_ray(job, folder: Path, out: Path, small: int) -> dict:
    import ray

    from core.batch.output import prepare_output
    from core.batch.ray_engine import CPUS_PER_ACTOR, ray_session, run_ray
    from core.batch.sources import list_source

    listing = list_source(str(folder))
    few = list_source(str(folder))
    few = few.without(set(few.names()[small:]))
    start = time.perf_counter()
    with ray_session():
        init = time.perf_counter() - start
        actors = int(ray.cluster_resources()["CPU"]) // CPUS_PER_ACTOR
        timings = {}
        # The first run on a fresh Ray also pays for its worker processes and the job's runtime
        # environment (the `core` package shipped to the workers): it is timed apart, not subtracted.
        for name, files in (("first", few), ("small", few), ("all", listing)):
            output = prepare_output(str(out / name), job, resume=False)
            start = time.perf_counter()
            run_ray(job, files, output)
            timings[name] = time.perf_counter() - start
    extra = timings["all"] - timings["small"]
    return {
        "actors": actors,
        "init_s": init,
        "first_s": timings["first"],
        "seconds": timings["all"],
        "ips": len(listing) / timings["all"],
        "small_images": len(few),
        "small_s": timings["small"],
        # None when the difference drowns in noise (too few images for the machine's load)
        "steady_ips": (len(listing) - len(few)) / extra if extra > 0.1 * timings["all"] else None,
    }


def memory(model: str, folder: Path, batch_size: int) -> dict:
    """One actor's memory: a fresh process with the worker's imports, then its model, then one batch."""
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, model, str(folder), str(batch_size)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "ZOOSCOPE_TORCH_THREADS": "1"},
        timeout=600,
    )
    if done.returncode:
        raise RuntimeError(f"the memory probe failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def split(model_name: str, folder: Path, batch_size: int, repeats: int = 3) -> dict:
    """Per image, on one thread: decode + preprocess, and its share of a batch's forward."""
    import torch

    from core.engines.choice import load_handle
    from core.images import decode_image
    from core.models.keys import ModelKey
    from core.preprocessing import decode_side, model_batch

    torch.set_num_threads(1)
    model = load_handle(ModelKey(model_name))
    side = decode_side([model.preprocess])
    files = [path.read_bytes() for path in sorted(folder.iterdir())[:batch_size]]
    decode, forward = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        batch = model_batch([decode_image(data, min_side=side) for data in files], model.preprocess)
        decode.append((time.perf_counter() - start) / len(files))
        start = time.perf_counter()
        model.forward(batch)
        forward.append((time.perf_counter() - start) / len(files))
    return {"decode_ms": statistics.median(decode) * 1000, "forward_ms": statistics.median(forward) * 1000}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--size", default="640x480", help="the generated JPEGs' size, WxH")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--small", type=int, default=32, help="images in the small Ray run (its fixed cost)")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    width, height = (int(side) for side in args.size.split("x"))

    scratch = Path(tempfile.mkdtemp(prefix="zooscope-bench-batch-"))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    os.environ["ZOOSCOPE_CACHE_DIR"] = str(scratch / "cache")  # this run's ONNX export, made once below
    folder = scratch / "photos"
    folder.mkdir()
    total_bytes = write_photos(folder, args.images, width, height)

    from core.batch.work import BatchJob
    from core.engines.choice import load_handle
    from core.models.keys import ModelKey
    from core.runtime import available_cpus

    job = BatchJob("classify", args.model, batch_size=args.batch_size)
    load_handle(ModelKey(args.model))  # the ONNX export and its check: first use only, not timed
    cpus = available_cpus()
    local_1 = time_local(job, folder, scratch / "local-1", 1)
    local = time_local(job, folder, scratch / "local", cpus)
    ray_run = time_ray(job, folder, scratch / "ray", args.small)
    figures = {
        "images": args.images,
        "size": args.size,
        "mean_kb": total_bytes / args.images / 1024,
        "model": args.model,
        "runtime": local["runtime"],
        "batch_size": args.batch_size,
        "cpus": cpus,
        "local_1": local_1,
        "local": local,
        "ray": ray_run,
        "memory": memory(args.model, folder, args.batch_size),
        "split": split(args.model, folder, args.batch_size),
        "load_average": os.getloadavg(),
    }
    print(report(figures, args.markdown))
    if args.json:
        args.json.write_text(json.dumps(figures))
    return 0


def report(f: dict, markdown: bool) -> str:
    local, local_1, ray = f["local"], f["local_1"], f["ray"]
    rows = [
        ["local engine, 1 thread", "1 thread", f"{local_1['seconds']:.1f}", f"{local_1['ips']:.1f}", ""],
        ["local engine", f"{local['threads']} threads", f"{local['seconds']:.1f}", f"{local['ips']:.1f}", "1.00x"],
        [
            "Ray (actors' start included)",
            f"{ray['actors']} actors x 1 thread",
            f"{ray['seconds']:.1f}",
            f"{ray['ips']:.1f}",
            f"{ray['ips'] / local['ips']:.2f}x",
        ],
        [
            f"Ray, small run ({ray['small_images']} images)",
            f"{ray['actors']} actors",
            f"{ray['small_s']:.1f}",
            "",
            "",
        ],
        [
            "Ray, steady (the two runs' difference)",
            f"{ray['actors']} actors",
            "",
            f"{ray['steady_ips']:.1f}" if ray["steady_ips"] else "lost in noise",
            f"{ray['steady_ips'] / local['ips']:.2f}x" if ray["steady_ips"] else "",
        ],
    ]
    memory, split = f["memory"], f["split"]
    lines = [
        f"{f['images']} generated JPEGs ({f['size']}, {f['mean_kb']:.0f} KB on average), {f['model']} in "
        f"{f['runtime']}, batches of {f['batch_size']}, {f['cpus']} CPUs; load average at the end "
        + ", ".join(f"{x:.1f}" for x in f["load_average"])
        + " (a shared machine: noisy).",
        "",
        table(["run", "workers", "seconds", "images/s", "vs local"], rows, markdown),
        "",
        f"ray.init (a local Ray, not timed above): {ray['init_s']:.1f} s; the first run on it "
        f"({ray['small_images']} images, its worker processes and runtime environment made): {ray['first_s']:.1f} s. "
        f"One actor (a fresh process, one thread): {memory['imported'] / MB:.0f} MB resident after its imports, "
        f"{memory['loaded'] / MB:.0f} MB with the model loaded, {memory['working'] / MB:.0f} MB after one batch "
        f"(peak {memory['peak'] / MB:.0f} MB, loading included). Per image on one thread: decode and "
        f"preprocessing {split['decode_ms']:.1f} ms, its share of a batch's forward {split['forward_ms']:.1f} ms.",
    ]
    return "\n".join([*lines, "", scaling(f, markdown)])


# A machine of a cluster, for the arithmetic below (an ordinary cloud CPU instance).
NODE_CORES, NODE_GB, NODE_GBIT = 16, 64, 10
PHONE_PHOTO_MB = 3.0  # a 12-megapixel JPEG
EMBEDDING_BYTES = 1280 * 4  # one efficientnet_lite0 embedding row (float32)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 2 * 3600 else f"{seconds / 3600:.1f} h"


def scaling(f: dict, markdown: bool) -> str:
    """How a run scales to N machines, worked out from this run's figures (not measured on a cluster)."""
    ray, memory, split = f["ray"], f["memory"], f["split"]
    per_actor = f["local_1"]["ips"]  # the local engine on one thread: what one actor (one CPU) does
    ray_per_actor = f"{ray['steady_ips'] / ray['actors']:.0f}" if ray["steady_ips"] else "lost in noise"
    actor_gb = memory["working"] / 2**30
    peak_gb = memory["peak"] / 2**30
    actors = min(NODE_CORES, int(NODE_GB * 0.7 / actor_gb))  # 30% of memory stays Ray's object store
    node_ips = actors * per_actor
    read_mb_s = node_ips * f["mean_kb"] / 1024
    phone_mb_s = node_ips * PHONE_PHOTO_MB
    nic_mb_s = NODE_GBIT * 1000 / 8
    in_flight_mb = actors * 4 * f["batch_size"] * f["mean_kb"] / 1024  # a few batches queued per actor
    fixed_s = ray["first_s"]
    took = {n: _duration(100_000 / (n * node_ips)) for n in (1, 4, 16)}
    store_gb = 0.3 * NODE_GB
    phone_in_flight_gb = in_flight_mb * PHONE_PHOTO_MB * 1024 / f["mean_kb"] / 1024
    heading = "### Scaling to N machines (worked out on paper)" if markdown else "Scaling to N machines (on paper)"
    return "\n".join(
        [
            heading,
            "",
            "From the figures above, not measured on a cluster; they were measured on a shared 2-core machine, "
            "so each is noisy (see the load average) and the sums below are orders of magnitude, not promises.",
            "",
            f"- **One actor** (one CPU, one thread) classifies about {per_actor:.0f} images/s (the local engine on "
            f"one thread; Ray's steady rate here, per actor: {ray_per_actor}): "
            f"{split['forward_ms']:.0f} ms of forward per image against {split['decode_ms']:.1f} ms of decoding and "
            f"preprocessing of these {f['size']} photos, so on CPUs the model is the bottleneck, not the JPEGs (a "
            "12-megapixel JPEG costs more to decode, even at the reduced scale the app decodes it at). It holds "
            f"{actor_gb:.2f} GB resident ({peak_gb:.2f} GB at its peak while loading): most of it is the runtime "
            "(torch's CUDA build costs about 500 MB to import), not the model (an ONNX file of about 20 MB). A "
            "machine therefore runs one actor per core as long as memory / actors stays above that.",
            f"- **One machine** of {NODE_CORES} cores and {NODE_GB} GB: {actors} actors, about {node_ips:.0f} "
            f"images/s; 100,000 images in about {took[1]}. Actors start once per run (import torch, load the "
            f"model; the first run here took {fixed_s:.0f} s for {ray['small_images']} images): small against "
            "100,000 images, dominant for a few hundred, where the local engine is the faster choice.",
            f"- **N machines**: throughput grows linearly, about {node_ips:.0f} x N images/s (100,000 images: "
            f"{took[4]} on 4, {took[16]} on 16), because actors share nothing: each reads its own files and "
            f"writes its own Parquet files. The actors' start (about {fixed_s:.0f} s here) is paid once whatever N: "
            "once the work takes less than that, more machines no longer shorten a run of 100,000 images (they "
            "still do for millions).",
            f"- **Object store**: bytes travel, not pixels. With batches of {f['batch_size']} and a few batches "
            f"queued per actor, about {in_flight_mb:.0f} MB per machine are in flight ({f['mean_kb']:.0f} KB "
            f"photos); 12-megapixel photos make that about {phone_in_flight_gb:.1f} GB, below the default store "
            f"(30% of memory: {store_gb:.0f} GB), which spills to disk beyond. A bigger batch speeds the forward "
            "only a little on CPUs; it mostly adds memory (decoded images and activations per actor).",
            f"- **Where the bottleneck moves**: reading. One machine reads {read_mb_s:.0f} MB/s of these photos, "
            f"up to {phone_mb_s:.0f} MB/s of 12-megapixel ones, against a {NODE_GBIT} Gbit/s network card's "
            f"{nic_mb_s:.0f} MB/s"
            + (" (the card, not the CPUs, then limits a machine)" if phone_mb_s > nic_mb_s else "")
            + "; the bucket's total bandwidth and request rate bound N (at thousands of requests per second per "
            "prefix, spread files over prefixes). Output is small: a classify row is about 300 bytes, an embedding "
            f"row {EMBEDDING_BYTES / 1024:.0f} KB (100,000 embeddings: about {100_000 * EMBEDDING_BYTES / 1e9:.1f} GB "
            "of Parquet).",
            "- **The driver** lists SOURCE once (a bucket lists 1,000 names per request: 100,000 files in about a "
            "hundred requests, seconds) and holds the list; at tens of millions of files, list per prefix and run "
            "in parts (`--resume` makes parts safe).",
            "- **On GPUs** the bottleneck moves to decoding: measured on an H100 (DESIGN.md), a forward takes "
            "about 3-5 ms at batch 1 and less per image in batches, while decoding a 1024x768 JPEG and its "
            "transforms take about 15 ms of CPU, five times the forward: one GPU needs five or more cores decoding "
            'for it, or decoding on the GPU (`torchvision.io.decode_jpeg(device="cuda")`). This engine decodes '
            "inside the actor, which suits CPUs; a GPU cluster would split decoding into its own CPU stage of "
            "`map_batches` ahead of GPU actors (`num_gpus=1`).",
        ]
    )


if __name__ == "__main__":
    run_report(main, "bench_batch.py")
