"""Shrink's goals: a fine-tuned model pruned and recovered, pruned and in int8; and int8 that keeps answers.

    python bench/bench_shrink.py [--threads N] [--ratio 0.5] [--epochs 4] [--markdown] [--json PATH]

1. efficientnet_lite0 fine-tuned (a new head, Fine-tune's fast mode) on the example textures, a set far
   from ImageNet's photos, then shrunk as the page and `python -m core shrink BUNDLE --recover-on DATA
   --prune 0.5 --int8` do: half the channels pruned and recovered by fine-tuning on the training split,
   that in int8, all judged by accuracy on the validation split. Goals, against the unpruned model in
   ONNX Runtime measured in the same run: pruned and recovered at most 0.6x the parameters and 0.75x the
   latency with accuracy within 0.03; pruned + int8 at least 2x faster with accuracy within 0.05.
2. The catalogue's efficientnet_lite0 in int8 (core.shrink.int8), calibrated on the example photos'
   calibration variations and judged on images it never saw: the check variations, and scikit-image's
   photos with their variations where scikit-image is installed (`make setup` installs it). Goal: the
   same top-1 as fp32 on at least 98% of them, at least 1.3x faster than fp32 in ONNX Runtime.

Latencies are batch 1, every variant's runs alternated in one loop (core.shrink.variants.time_all), on one
thread and on all. A report, not a test: it always exits 0; on a shared machine every figure moves with its load.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import table  # noqa: E402

GOALS = {"params": 0.6, "latency": 0.75, "accuracy_drop": 0.03, "int8_pruned_speedup": 2.0, "int8_pruned_drop": 0.05,
         "agreement": 0.98, "int8_speedup": 1.3}  # fmt: skip


def fine_tuned_part(ratio: float, epochs: int, folder: Path) -> dict:
    from core.datasets.labelled import dataset_from_folder
    from core.finetune.config import TrainConfig
    from core.finetune.examples import EXAMPLE_FOLDER
    from core.finetune.train import train
    from core.models.loading import load_model
    from core.shrink.run import ShrinkOptions, shrink
    from core.shrink.source import bundle_source, images_for_bundle

    loaded = load_model("efficientnet_lite0")
    dataset = dataset_from_folder(EXAMPLE_FOLDER)
    started = time.perf_counter()
    trained = train(loaded, dataset, TrainConfig(mode="fast"))
    train_s = time.perf_counter() - started
    source = bundle_source(trained, loaded)
    images = images_for_bundle(trained, dataset, loaded.spec)
    started = time.perf_counter()
    result = shrink(
        source, images, folder, ShrinkOptions(ratios=(ratio,), int8=True, zeros=False, recover_epochs=epochs)
    )
    return {"train_s": train_s, "shrink_s": time.perf_counter() - started, **_variants(result)}


def int8_part(folder: Path) -> dict:
    from core.datasets.check_images import check_images
    from core.models.loading import load_model
    from core.shrink.run import ShrinkOptions, shrink
    from core.shrink.source import catalogue_source, images_for_catalogue

    holdout, described = check_images(), "39 check variations of the 3 example photos"
    try:
        from bench.held_out_photos import skimage_photos

        extra = skimage_photos()
        holdout, described = holdout + extra, f"{described} + {len(extra)} scikit-image photos and variations"
    except ImportError:
        pass
    loaded = load_model("efficientnet_lite0")
    images = images_for_catalogue((), holdout)
    result = shrink(catalogue_source(loaded), images, folder, ShrinkOptions(ratios=(), int8=True, zeros=False))
    return {"holdout": described, **_variants(result)}


def _variants(result) -> dict:
    return {
        "images": result.images,
        "fidelity_kind": result.fidelity_kind,
        "variants": [
            {
                "variant": v.name, "params": v.params, "gflops": v.gflops, "size_mb": v.size_mb,
                "latency_ms": v.latency_ms, "latency_ms_one_thread": v.latency_one_thread_ms, "fidelity": v.fidelity,
                "notes": list(v.notes),
            }
            for v in result.variants
        ],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="zooscope-bench-shrink-") as folder:
        report = {
            "goals": GOALS,
            "ratio": args.ratio,
            "epochs": args.epochs,
            "fine_tuned": fine_tuned_part(args.ratio, args.epochs, Path(folder) / "tuned"),
            "int8": int8_part(Path(folder) / "int8"),
        }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    _print(report, args.markdown)


def _print(report: dict, markdown: bool) -> None:
    for part in ("fine_tuned", "int8"):
        data = report[part]
        base = data["variants"][0]
        print(f"{part}: {data['images']}" + (f" (held out: {data['holdout']})" if "holdout" in data else ""))
        header = ["variant", "params", "× params", "latency (ms)", "× latency", "1 thread (ms)", "size (MB)",
                  data["fidelity_kind"]]  # fmt: skip
        rows = [
            [v["variant"], f"{v['params'] / 1e6:.2f} M", f"{v['params'] / base['params']:.2f}",
             f"{v['latency_ms']:.1f}", f"{v['latency_ms'] / base['latency_ms']:.2f}",
             f"{v['latency_ms_one_thread']:.1f}", f"{v['size_mb']:.1f}", f"{v['fidelity']:.3f}"]
            for v in data["variants"]
        ]  # fmt: skip
        print(table(header, rows, markdown))
        for v in data["variants"]:
            print(f"  {v['variant']}: " + "; ".join(v["notes"]))


if __name__ == "__main__":
    main()
