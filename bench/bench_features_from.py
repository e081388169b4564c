"""Fast mode from the best stage against fast mode from the penultimate layer, on a domain-shifted set.

    python bench/bench_features_from.py [--threads N] [--per-class 30] [--seeds 3] [--runs 30]
                                        [--markdown] [--json PATH]

The set: scikit-learn's handwritten digits (8x8 grey, `load_digits`), upscaled to 64x64 RGB PNGs, `--per-class`
of each of the 10 classes (300 images): nothing like ImageNet's photos. On efficientnet_lite0 (real weights):

1. the per-stage linear probes (core.features.probes) on each seed's training split pick the best stage
   (`finetune --features-from best` does the same);
2. fast mode (a linear head, the default settings) trains from that stage and from the penultimate layer on
   the same split; validation accuracy of each, and the difference. Goal: at least +0.1, averaged over seeds;
3. the cut network (core.features.cut) against the backbone without its head: parameters, and PyTorch CPU
   latency at batch 1 and 16 (both alternated in one loop, medians).

A report, not a test: it always exits 0; on a shared machine the latencies move with its load.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import run_report, table  # noqa: E402

GOALS = {"accuracy_gain": 0.1}
SIDE = 64


def digits_dataset(per_class: int):
    """`per_class` upscaled digits of each class, as a person would upload them (PNG bytes)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    from core.datasets.labelled import dataset_from_uploads

    digits = load_digits()
    uploads: dict[str, list[tuple[str, bytes]]] = {str(label): [] for label in range(10)}
    for index, (pixels, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        files = uploads[str(label)]
        if len(files) >= per_class:
            continue
        grey = Image.fromarray((pixels * (255 / 16)).astype(np.uint8)).resize((SIDE, SIDE), Image.BILINEAR)
        buffer = io.BytesIO()
        grey.convert("RGB").save(buffer, format="PNG")
        files.append((f"digit_{index}.png", buffer.getvalue()))
    return dataset_from_uploads(uploads)


def _timed(modules: dict, batch, runs: int) -> dict[str, float]:
    """Median milliseconds per forward of each module, their runs alternated."""
    import torch

    times: dict[str, list[float]] = {name: [] for name in modules}
    with torch.inference_mode():
        for module in modules.values():
            module(batch)  # warm-up
        for _ in range(runs):
            for name, module in modules.items():
                started = time.perf_counter()
                module(batch)
                times[name].append((time.perf_counter() - started) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def cut_costs(loaded, stage: str, runs: int) -> dict:
    import torch

    from core.features.cut import cut_at, parameter_count
    from core.features.stages import PENULTIMATE

    full, cut = cut_at(loaded, PENULTIMATE), cut_at(loaded, stage)
    side = loaded.spec.input_size
    latency = {
        size: _timed({"full": full, "cut": cut}, torch.randn(size, 3, side, side), max(3, runs // (1 + size // 4)))
        for size in (1, 16)
    }
    return {
        "params_full": parameter_count(full),
        "params_cut": parameter_count(cut),
        "latency_ms": {str(size): value for size, value in latency.items()},
    }


def run(per_class: int, seeds: int, runs: int, lr: float = 1e-3) -> dict:
    from core.features.stages import PENULTIMATE
    from core.finetune.config import TrainConfig
    from core.finetune.extraction import FeatureCache
    from core.finetune.features_from import BEST, resolve
    from core.finetune.train import train
    from core.models.loading import load_model

    loaded = load_model("efficientnet_lite0")
    dataset = digits_dataset(per_class)
    cache = FeatureCache()  # each stage's features computed once, whatever the seed's split
    trials = []
    for seed in range(seeds):
        started = time.perf_counter()
        config, probes = resolve(loaded, dataset, TrainConfig(seed=seed, lr=lr, features_from=BEST))
        probe_s = time.perf_counter() - started
        assert probes is not None
        from_stage = train(loaded, dataset, config, cache=cache)
        from_last = train(loaded, dataset, TrainConfig(seed=seed, lr=lr), cache=cache)
        trials.append(
            {
                "seed": seed,
                "best_stage": config.features_from,
                "probe_s": probe_s,
                "probes": probes.as_json()["stages"],
                "val_accuracy_stage": from_stage.val_accuracy,
                "val_accuracy_penultimate": from_last.val_accuracy,
                "gain": from_stage.val_accuracy - from_last.val_accuracy,
            }
        )
    stages = [trial["best_stage"] for trial in trials]
    common = max(set(stages), key=stages.count)
    return {
        "goals": GOALS,
        "model": loaded.spec.name,
        "images": len(dataset.items),
        "classes": len(dataset.classes),
        "trials": trials,
        "mean_gain": statistics.mean(trial["gain"] for trial in trials),
        "mean_val_accuracy_stage": statistics.mean(trial["val_accuracy_stage"] for trial in trials),
        "mean_val_accuracy_penultimate": statistics.mean(trial["val_accuracy_penultimate"] for trial in trials),
        "stage": common,
        "cut": cut_costs(loaded, common, runs) if common != PENULTIMATE else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=3, help="splits (and head initialisations) averaged over")
    parser.add_argument("--runs", type=int, default=30, help="timed forwards per network at batch 1")
    parser.add_argument("--lr", type=float, default=1e-3, help="the head's learning rate, both ways")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    report = run(args.per_class, args.seeds, args.runs, args.lr)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    _print(report, args.markdown)


def _print(report: dict, markdown: bool) -> None:
    print(f"{report['model']} on {report['images']} upscaled digits ({report['classes']} classes)")
    header = ["seed", "best stage (probes)", "probe accuracy", "from the stage", "from the penultimate layer", "gain"]
    rows = []
    for trial in report["trials"]:
        probe = {score["stage"]: score["accuracy"] for score in trial["probes"]}
        rows.append(
            [str(trial["seed"]), trial["best_stage"], f"{probe[trial['best_stage']]:.3f} vs {probe['penultimate']:.3f}",
             f"{trial['val_accuracy_stage']:.3f}", f"{trial['val_accuracy_penultimate']:.3f}", f"{trial['gain']:+.3f}"]
        )  # fmt: skip
    rows.append(["mean", "", "", f"{report['mean_val_accuracy_stage']:.3f}",
                 f"{report['mean_val_accuracy_penultimate']:.3f}", f"{report['mean_gain']:+.3f}"])  # fmt: skip
    print(table(header, rows, markdown))
    verdict = "pass" if report["mean_gain"] >= report["goals"]["accuracy_gain"] else "MISS"
    print(f"goal: gain >= {report['goals']['accuracy_gain']}: {verdict}")
    cut = report["cut"]
    if cut:
        print(f"\nthe network cut at {report['stage']} against the backbone without its head (PyTorch, CPU)")
        header = ["", "cut", "full", "ratio"]
        rows = [["parameters", f"{cut['params_cut'] / 1e6:.2f} M", f"{cut['params_full'] / 1e6:.2f} M",
                 f"{cut['params_cut'] / cut['params_full']:.2f}x"]]  # fmt: skip
        for size, value in cut["latency_ms"].items():
            rows.append([f"latency, batch {size}", f"{value['cut']:.1f} ms", f"{value['full']:.1f} ms",
                         f"{value['cut'] / value['full']:.2f}x"])  # fmt: skip
        print(table(header, rows, markdown))


if __name__ == "__main__":
    run_report(main, "bench_features_from.py")
