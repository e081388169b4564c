"""Fine-tune mode's time estimate against the training it estimates, on the example dataset.

    python bench/bench_estimate.py [--models efficientnet_lite0,resnet18] [--depths head,last,all]
                                   [--epochs 3] [--repeats 1] [--threads N] [--markdown] [--json PATH]

For each model and depth: the per-image costs measured the way the page's background job measures
them (core.finetune.estimate.measure_costs: a batch of 8 of the images, each part warmed up, then
timed), turned into the whole training's time by estimate_seconds; then the real train() of that
training with an empty feature cache (every feature computed, as the estimate assumes), timed. The
example dataset is ZooScope's bundled one (brick, grass, gravel: 75 photos, 60 train / 15 validation).
efficientnet_lite0 is the bundled real model; the others get random weights in a temporary cache
(time does not depend on the weights' values). Goal: actual / estimate between 0.67 and 1.5. With
--repeats above 1, measuring and training alternate and the medians are reported. A report, not a
test: it always exits 0. On a machine other work shares, both sides of the ratio move with its load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.report import run_report, table  # noqa: E402

GOAL_LOW, GOAL_HIGH = 0.67, 1.5


def measure(name: str, depths: list[str], epochs: int, repeats: int) -> list[dict]:
    """Estimate and actual seconds of each depth's training of `name` on the example dataset."""
    from core.datasets.labelled import stratified_split
    from core.finetune.config import TrainConfig
    from core.finetune.estimate import estimate_seconds, measure_costs
    from core.finetune.examples import example_dataset
    from core.finetune.extraction import FeatureCache
    from core.finetune.train import train
    from core.models.loading import load_model

    loaded = load_model(name)
    dataset = example_dataset()
    results = []
    for depth in depths:
        config = TrainConfig(mode="finetune", unfreeze=depth, epochs=epochs)
        train_items, val_items = stratified_split(dataset.items, val_fraction=config.val_fraction, seed=config.seed)
        estimates, actuals, measuring = [], [], []
        for _ in range(repeats):
            start = time.perf_counter()
            costs = measure_costs(loaded, dataset.items, config)
            measuring.append(time.perf_counter() - start)
            cost = costs[depth]
            estimates.append(
                estimate_seconds(cost, config, len(train_items), len(val_items), uncached=len(dataset.items))
            )
            start = time.perf_counter()
            train(loaded, dataset, config, cache=FeatureCache())
            actuals.append(time.perf_counter() - start)
        estimate, actual = statistics.median(estimates), statistics.median(actuals)
        results.append(
            {
                "model": name,
                "depth": depth,
                "epochs": epochs,
                "images": len(dataset.items),
                "estimate_s": estimate,
                "actual_s": actual,
                "ratio": actual / estimate,
                "measuring_s": statistics.median(measuring),
                "ratios": [a / e for a, e in zip(actuals, estimates, strict=True)],
                "load": os.getloadavg()[0],
            }
        )
        print(f"   {name} {depth}: estimate {estimate:.1f} s, actual {actual:.1f} s", file=sys.stderr, flush=True)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="efficientnet_lite0,resnet18", help="comma-separated catalogue names")
    parser.add_argument("--depths", default="head,last,all", help="comma-separated: head, last, half, all")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1, help="alternated measure + train runs (medians)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: ZooScope's own)")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    import torch

    from bench.fake_weights import use_hub, write_random_weights
    from core.runtime import configure_threads

    threads = configure_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
        threads = args.threads
    models = [name.strip() for name in args.models.split(",") if name.strip()]
    depths = [depth.strip() for depth in args.depths.split(",") if depth.strip()]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="zooscope-bench-estimate-") as folder:
        os.environ.setdefault("ZOOSCOPE_CACHE_DIR", str(Path(folder) / "cache"))
        others = [name for name in models if name != "efficientnet_lite0"]
        if others:
            write_random_weights(others, Path(folder))
            use_hub(Path(folder))
        results = [row for name in models for row in measure(name, depths, args.epochs, args.repeats)]
    rows = [
        [
            r["model"],
            r["depth"],
            f"{r['estimate_s']:.1f} s",
            f"{r['actual_s']:.1f} s",
            f"{r['ratio']:.2f}",
            f"{GOAL_LOW}-{GOAL_HIGH}: {'met' if GOAL_LOW <= r['ratio'] <= GOAL_HIGH else 'missed'}",
            f"{r['measuring_s']:.1f} s",
        ]
        for r in results
    ]
    print(
        f"Fine-tune mode on the example dataset ({results[0]['images'] if results else 0} photos, 80/20 split), "
        f"{args.epochs} epochs, {threads} torch thread(s), {args.repeats} run(s) each (medians); "
        f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    header = ["model", "depth", "estimate", "actual train()", "actual / estimate", "goal", "measuring took"]
    print(table(header, rows, args.markdown))
    if args.json:
        args.json.write_text(json.dumps({"goal": [GOAL_LOW, GOAL_HIGH], "results": results}, indent=2))


if __name__ == "__main__":
    run_report(main, "bench_estimate.py")
