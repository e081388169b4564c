"""Which layer fits: probing every stage of a backbone, its cost and what it finds.

    python bench/bench_transfer.py [--threads N] [--per-class 30] [--markdown] [--json PATH]

1. Cost. Every stage of efficientnet_lite0 probed on 300 images (scikit-learn's handwritten digits, upscaled
   to 64x64 RGB PNGs, 30 per class; bench_features_from's set): core.features.stages.stage_features (one
   forward pass with a hook on every stage) plus core.features.probes.probe_stages (a 5-fold logistic
   regression per stage), against one plain extraction pass over the same PNG bytes (decode, then
   core.features.embedding.embedder_for(loaded, runtime="torch").embed_images, batches of 16), measured
   before and after the probing; the baseline is their mean. Goal: at most 1.5x.
2. What it finds. Each stage's cross-validated accuracy on the digits (a set far from ImageNet's photos)
   and on the example dataset (brick, grass and gravel tiles of natural photos), the best stage against
   the penultimate layer.

A report, not a test: it always exits 0; on a shared machine every time moves with its load.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import run_report, table  # noqa: E402

GOAL_RATIO = 1.5
MODEL = "efficientnet_lite0"
BATCH = 16


def extraction_pass(loaded, blobs: list[bytes]) -> float:
    """Seconds for one plain penultimate-layer pass over encoded images, decoding included."""
    from core.features.embedding import embedder_for

    embedder = embedder_for(loaded, runtime="torch")
    started = time.perf_counter()
    for start in range(0, len(blobs), BATCH):
        embedder.embed_images([embedder.decode(data) for data in blobs[start : start + BATCH]])
    return time.perf_counter() - started


def probed(loaded, items) -> tuple[dict, float, float]:
    """(the result's JSON with its folds, stage_features seconds, probes seconds)."""
    from core.features.probes import probe_stages
    from core.features.stages import stage_features

    started = time.perf_counter()
    found = stage_features(loaded, [item.data for item in items], batch_size=BATCH)
    features_s = time.perf_counter() - started
    started = time.perf_counter()
    result = probe_stages(found, [item.label for item in items])
    probes_s = time.perf_counter() - started
    summary = {**result.as_json(), "folds": result.folds, "images": result.images, "classes": result.classes,
               "penultimate": result.penultimate.accuracy, "best_accuracy": result.best.accuracy,
               "best_depth": result.best.relative_depth}  # fmt: skip
    return summary, features_s, probes_s


def run(per_class: int) -> dict:
    from bench.bench_features_from import digits_dataset
    from core.finetune.examples import example_dataset
    from core.models.loading import load_model

    loaded = load_model(MODEL)
    digits = digits_dataset(per_class).items
    blobs = [item.data for item in digits]
    extraction_pass(loaded, blobs[:BATCH])  # warm-up: first-call allocations out of the timings
    before = extraction_pass(loaded, blobs)
    found, features_s, probes_s = probed(loaded, digits)
    after = extraction_pass(loaded, blobs)
    baseline = (before + after) / 2
    textures, _, _ = probed(loaded, example_dataset().items)
    return {
        "model": MODEL,
        "images": len(digits),
        "goal_ratio": GOAL_RATIO,
        "extraction_s": baseline,
        "extraction_runs_s": [before, after],
        "stage_features_s": features_s,
        "probes_s": probes_s,
        "ratio": (features_s + probes_s) / baseline,
        "digits": found,
        "textures": textures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--per-class", type=int, default=30, help="digits per class (10 classes; default 30)")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    report = run(args.per_class)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    _print(report, args.markdown)


def _print(report: dict, markdown: bool) -> None:
    cost = report["stage_features_s"] + report["probes_s"]
    features_s, probes_s, ratio = report["stage_features_s"], report["probes_s"], report["ratio"]
    print(
        f"{report['model']}, {report['images']} images: every stage probed in {cost:.1f} s ({features_s:.1f} s "
        f"features + {probes_s:.1f} s probes) against one extraction pass of {report['extraction_s']:.1f} s: "
        f"{ratio:.2f}x (goal ≤ {report['goal_ratio']}x)"
    )
    for name, described in (("digits", "upscaled digits"), ("textures", "the example dataset (textures)")):
        data = report[name]
        print(f"\n{described}: {data['images']} images, {data['classes']} classes, {data['folds']}-fold probes; "
              f"best {data['best']} {data['best_accuracy']:.3f} against the penultimate layer's "
              f"{data['penultimate']:.3f}")  # fmt: skip
        rows = [[s["stage"], f"{s['relative_depth']:.2f}", str(s["dim"]), f"{s['accuracy']:.3f}", f"{s['std']:.3f}"]
                for s in data["stages"]]  # fmt: skip
        print(table(["stage", "relative depth", "dim", "accuracy", "± std"], rows, markdown))


if __name__ == "__main__":
    run_report(main, "bench_transfer")
