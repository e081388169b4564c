"""What ImageNet pre-training buys: fine-tuning against the same network from random weights, for the same time.

    python bench/bench_scratch.py [--threads N] [--per-class 20] [--epochs 4] [--train-size 128]
                                  [--markdown] [--json PATH]

On efficientnet_lite0 (the bundled real ImageNet weights), two sets:

- digits, a domain-shifted set: scikit-learn's handwritten digits (8x8 grey, `load_digits`) upscaled to
  64x64 RGB PNGs, `--per-class` of each of the 10 classes;
- photos: the example dataset (assets/datasets/textures: brick, grass, gravel, 25 tiles each).

For each, on the same stratified split and the same augmentations: fine-tune mode (its defaults, the last
half of the network, `--epochs`, two cached views) is timed, then scratch mode (core.finetune.scratch) trains
the whole network from random weights with that time as its budget. Validation accuracy of each, side by side,
with the seconds and epochs each ran. He et al. 2019 ("Rethinking ImageNet pre-training") found that from
scratch catches up only given much more time and data: here both get the same few seconds and images.

A report, not a test: it always exits 0. Both runs share the machine's load (the load average is printed),
and the budget is wall-clock time, so a loaded machine gives both fewer epochs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_features_from import digits_dataset  # noqa: E402  (the same digits as the other benches)
from bench.report import table  # noqa: E402


def side_by_side(name: str, loaded, dataset, epochs: int, train_size: int | None) -> dict:
    """Fine-tune mode, then scratch mode for the time fine-tuning took, on `dataset`."""
    from core.finetune.config import TrainConfig
    from core.finetune.train import train

    tuned = train(loaded, dataset, TrainConfig(mode="finetune", epochs=epochs, views=2, train_size=train_size))
    budget = tuned.seconds
    scratch = train(loaded, dataset, TrainConfig(mode="scratch", train_size=train_size, time_budget_s=budget))
    val = int(tuned.metrics.per_class_frame()["support"].sum())
    return {
        "set": name,
        "images": len(dataset.items),
        "validation images": val,
        "fine_tuned": {"accuracy": tuned.val_accuracy, "seconds": tuned.seconds, "epochs": tuned.epochs_run},
        "scratch": {"accuracy": scratch.val_accuracy, "seconds": scratch.seconds, "epochs": scratch.epochs_run},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=4, help="fine-tune mode's epochs")
    parser.add_argument("--train-size", type=int, default=128, help="training resolution of both (0: the model's own)")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import torch

    from core import runtime
    from core.finetune.examples import example_dataset
    from core.models.loading import load_model

    if args.threads:
        runtime.configure_threads()  # what train() does once per process, so that this choice stays
        torch.set_num_threads(args.threads)
    loaded = load_model("efficientnet_lite0")
    size = args.train_size or None
    rows = [
        side_by_side("digits (domain-shifted)", loaded, digits_dataset(args.per_class), args.epochs, size),
        side_by_side("photos (example textures)", loaded, example_dataset(), args.epochs, size),
    ]
    report = {
        "backbone": "efficientnet_lite0",
        "train_size": size or loaded.spec.input_size,
        "fine_tune_epochs": args.epochs,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "rows": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    _print(report, args.markdown)


def _print(report: dict, markdown: bool) -> None:
    load = ", ".join(f"{value:.1f}" for value in report["load_average"])
    print(
        f"{report['backbone']}, trained at {report['train_size']} px, {report['threads']} threads, "
        f"load average {load}; fine-tune mode: {report['fine_tune_epochs']} epochs, the last half"
    )
    header = ["set", "images (validation)", "fine-tuned", "from scratch", "seconds (each)", "epochs (ft / scratch)"]
    rows = [
        [r["set"], f"{r['images']} ({r['validation images']})", f"{r['fine_tuned']['accuracy']:.3f}",
         f"{r['scratch']['accuracy']:.3f}", f"{r['fine_tuned']['seconds']:.0f} / {r['scratch']['seconds']:.0f}",
         f"{r['fine_tuned']['epochs']} / {r['scratch']['epochs']}"]
        for r in report["rows"]
    ]  # fmt: skip
    print(table(header, rows, markdown))


if __name__ == "__main__":
    main()
