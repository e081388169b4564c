"""Peak memory of classifying 200 photos in one batch, against a stated bound and a naive baseline.

    python bench/bench_batch_memory.py [--photos 200] [--size 1600x1200] [--model efficientnet_lite0]
                                       [--threads 1] [--json PATH]

The parent makes `--photos` realistic JPEGs in memory (scikit-image's photos, scaled to 1600x1200,
shifted, mirrored, with a light gradient and sensor-like noise: about a phone photo's size in
bytes) and hands the same bytes to fresh subprocesses, one per measurement, so no run inherits
another's freed memory:

- forward: the model loaded, then one forward of a zero batch of `batch_size`, the largest batch
  the app runs: the model's weights plus the forward's activations, measured;
- ours: `core.classify.predict.classify_files(model, files, thumbnails=True)` as the Classify page calls it:
  each batch of 16 decoded, classified, kept as a thumbnail, and freed before the next;
- naive: decode all the photos first (and keep them, as an app that shows them would), then
  classify them in the same batches with thumbnails.

Each child starts from the uploaded bytes already in memory (as Streamlit holds them) and torch
imported; the growth of its resident memory from there is sampled every 2 ms by a thread
(psutil) and the peak reported. The model is loaded inside the measured window in all three.

The bound for ours is computed from measured and counted numbers, not fitted to the result:

    bound = forward peak (weights + activations of one batch)
          + FACTOR x batch_size x decoded image (W x H x 4 bytes: Pillow stores RGB as RGBX): the
            batch's decoded images, plus one transient copy each (PIL's convert / EXIF copy, the
            thumbnail's source copy)
          + photos x thumbnail (at most 512 px on the long side, x 4 bytes): kept for display
          + batch_size x input tensor (3 x S x S float32)

A report, not a test: it always exits 0.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MB = 2**20
FACTOR = 2.0
PIXEL_BYTES = 4  # Pillow holds an "RGB" image as 4 bytes a pixel (RGBX), not 3
THUMBNAIL_SIDE = 512
VARIANTS = ("forward", "ours", "naive")


# --------------------------------------------------------------------------- the photos


def make_photos(count: int, width: int, height: int) -> list[tuple[str, bytes]]:
    """`count` JPEGs of width x height, each different, from real photos (deterministic)."""
    import numpy as np
    from PIL import Image
    from skimage import data as skdata

    sources = [skdata.chelsea(), skdata.coffee(), skdata.rocket(), skdata.astronaut(), skdata.immunohistochemistry()]
    bases = [np.asarray(Image.fromarray(s).resize((width, height), Image.Resampling.BICUBIC)) for s in sources]
    gradient = np.linspace(-18, 18, width, dtype=np.float32)[None, :, None]
    rng = np.random.default_rng(0)
    photos = []
    for index in range(count):
        base = bases[index % len(bases)]
        shifted = np.roll(base, shift=(index * 37) % width, axis=1)
        if index % 2:
            shifted = shifted[:, ::-1]
        noise = rng.normal(0, 3.0, size=(height, width, 1)).astype(np.float32)
        pixels = np.clip(shifted.astype(np.float32) + gradient * ((index % 7) - 3) / 3 + noise, 0, 255)
        buffer = io.BytesIO()
        Image.fromarray(pixels.astype(np.uint8)).save(buffer, "JPEG", quality=88)
        photos.append((f"photo_{index:03d}.jpg", buffer.getvalue()))
    return photos


# --------------------------------------------------------------------------- child side


class Sampler(threading.Thread):
    """The peak of this process's RSS, read every `interval` seconds (a lower bound of the true peak)."""

    def __init__(self, interval: float = 0.002):
        super().__init__(daemon=True)
        import psutil

        self._process = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop_event = threading.Event()

    def sample(self) -> int:
        rss = self._process.memory_info().rss
        self.peak = max(self.peak, rss)
        return rss

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self.sample()


def child(variant: str, model_name: str, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from core.classify.predict import DEFAULT_BATCH_SIZE, classify_files, classify_images
    from core.images import decode_image
    from core.models.catalog import get_spec
    from core.models.loading import load_model

    files = pickle.load(sys.stdin.buffer)
    batch_size = DEFAULT_BATCH_SIZE
    spec = get_spec(model_name)
    gc.collect()
    sampler = Sampler()
    baseline = sampler.sample()
    sampler.start()
    start = time.perf_counter()
    model = load_model(model_name)
    figures: dict = {"model_mb": model.memory_mb, "input_size": spec.input_size, "batch_size": batch_size}
    if variant == "forward":
        with torch.inference_mode():
            model.module(torch.zeros(batch_size, 3, spec.input_size, spec.input_size))
    elif variant == "ours":
        results = classify_files(model, files, thumbnails=True)
        figures["classified"] = sum(hasattr(r, "predictions") for r in results)
        thumbnails = [r.thumbnail.size for r in results if getattr(r, "thumbnail", None) is not None]
        figures["thumbnail_bytes"] = sum(w * h * PIXEL_BYTES for w, h in thumbnails)
        figures["top1"] = [r.top1.label for r in results[:5]]
    else:  # naive: every photo decoded up front, kept for display, then classified in batches
        images = [decode_image(data) for _, data in files]
        names = [name for name, _ in files]
        results = []
        for at in range(0, len(images), batch_size):
            chunk = slice(at, at + batch_size)
            results += classify_images(model, images[chunk], names[chunk], thumbnails=True)
        figures["classified"] = len(results)
        figures["top1"] = [r.top1.label for r in results[:5]]
    sampler.stop()
    figures.update(seconds=time.perf_counter() - start, peak_growth_mb=(sampler.peak - baseline) / MB)
    return figures


# --------------------------------------------------------------------------- parent side


def run_child(variant: str, args: argparse.Namespace, payload: bytes) -> dict:
    command = [sys.executable, __file__, "--child", variant, "--model", args.model, "--threads", str(args.threads)]
    done = subprocess.run(command, input=payload, capture_output=True, cwd=ROOT, check=False)
    if done.returncode != 0:
        return {"error": done.stderr.decode(errors="replace")[-2000:]}
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--size", default="1600x1200", help="WIDTHxHEIGHT of each photo")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads in the children")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.model, args.threads)))
        return

    width, height = (int(v) for v in args.size.lower().split("x"))
    started = time.perf_counter()
    photos = make_photos(args.photos, width, height)
    payload = pickle.dumps(photos)
    total_mb = sum(len(data) for _, data in photos) / MB
    print(
        f"{args.photos} JPEGs of {width}x{height} made in memory in {time.perf_counter() - started:.1f} s: "
        f"{total_mb:.1f} MB in all ({total_mb / args.photos * 1024:.0f} KB each on average); "
        f"model {args.model}, {args.threads} torch thread(s)"
    )
    results = {variant: run_child(variant, args, payload) for variant in VARIANTS}
    for variant, figures in results.items():
        if "error" in figures:
            print(f"{variant} failed:\n{figures['error']}")
            return

    forward, ours, naive = (results[v] for v in VARIANTS)
    batch, size = forward["batch_size"], forward["input_size"]
    decoded_mb = width * height * PIXEL_BYTES / MB
    scale = THUMBNAIL_SIDE / max(width, height)
    thumbnail_mb = round(width * scale) * round(height * scale) * PIXEL_BYTES / MB
    tensor_mb = 3 * size * size * 4 / MB
    terms = {
        f"forward peak ({forward['model_mb']:.1f} MB of weights + activations of a batch of {batch}, measured)": (
            forward["peak_growth_mb"]
        ),
        f"{FACTOR:g} x {batch} decoded images x {decoded_mb:.2f} MB ({width}x{height}x{PIXEL_BYTES})": FACTOR
        * batch
        * decoded_mb,
        f"{args.photos} thumbnails x {thumbnail_mb:.2f} MB (at most {THUMBNAIL_SIDE} px, x{PIXEL_BYTES})": args.photos
        * thumbnail_mb,
        f"{batch} input tensors x {tensor_mb:.2f} MB (3x{size}x{size} float32)": batch * tensor_mb,
    }
    bound = sum(terms.values())
    print("\nThe bound for ours:")
    for label, value in terms.items():
        print(f"  {value:8.1f} MB  {label}")
    print(f"  {bound:8.1f} MB  bound")
    print(f"\n{'run':<8} {'peak RSS growth':>16} {'time':>8}  classified  top-1 of the first photos")
    for variant in VARIANTS:
        figures = results[variant]
        classified = figures.get("classified", "-")
        top = ", ".join(figures.get("top1", [])) or "-"
        print(
            f"{variant:<8} {figures['peak_growth_mb']:13.1f} MB {figures['seconds']:7.1f}s  {classified!s:>10}  {top}"
        )
    ratio = ours["peak_growth_mb"] / naive["peak_growth_mb"]
    within = ours["peak_growth_mb"] <= bound
    print(
        f"\nours: {ours['peak_growth_mb']:.1f} MB peak growth, {'within' if within else 'OVER'} the "
        f"{bound:.1f} MB bound ({ours['peak_growth_mb'] / bound:.2f} of it); thumbnails kept: "
        f"{ours.get('thumbnail_bytes', 0) / MB:.1f} MB"
    )
    print(
        f"naive: {naive['peak_growth_mb']:.1f} MB (all {args.photos} decoded: "
        f"{args.photos * decoded_mb:.0f} MB of pixels); ours / naive = {ratio:.2f}"
    )
    if args.json:
        summary = {"bound_mb": bound, "terms": terms, "ratio": ratio, "within_bound": within, "runs": results}
        Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # a report, not a test
        print(f"bench_batch_memory failed: {error!r}")
    sys.exit(0)
