"""Light work beside heavy work: classifying one photo while a whole-network fine-tune trains in the same process.

    python bench/bench_light_work.py [--runs 15] [--epochs 3] [--markdown] [--json PATH]

On Community Cloud every visitor is a thread of one process, so a visitor classifying a photo shares the
cores with another visitor's training run. Classifying never waits in the job queue (core/jobs); this
measures what it costs it anyway. In one process, on the app's own threads:

- alone: efficientnet_lite0 classifies the coffee photo (decode, preprocess, ONNX Runtime forward,
  top-k: core.classify.predict.classify_files), `--runs` times, median;
- beside training: the same, while `--trainings` other threads (2: the job queue runs one per core on a
  2-core host) each fine-tune the whole network on the example dataset (core.finetune.train, fine-tune
  mode), as visitors' Train clicks do.

Goal (issue 21): under 2x its time alone. A report, not a test: it always exits 0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.report import run_report, table  # noqa: E402

GOAL = 2.0
PHOTO = ROOT / "assets" / "examples" / "coffee.jpg"


def classify_times(handle, runs: int, keep_going=lambda: True) -> list[float]:
    from core.classify.predict import classify_files

    files = [(PHOTO.name, PHOTO.read_bytes())]
    times = []
    for _ in range(runs):
        if not keep_going():
            break
        started = time.perf_counter()
        (result,) = classify_files(handle, files)
        times.append(time.perf_counter() - started)
        assert result.top1.label == "espresso", result
        time.sleep(0.05)  # a person's clicks are apart
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--trainings", type=int, default=2, help="at once (the queue admits one per core)")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from core.engines.choice import load_handle
    from core.finetune.config import TrainConfig
    from core.finetune.examples import example_dataset
    from core.finetune.train import train
    from core.models.keys import ModelKey

    handle = load_handle(ModelKey("efficientnet_lite0"), runtime_choice="onnx")
    trainer = load_handle(ModelKey("efficientnet_lite0"), runtime_choice="torch").torch
    dataset = example_dataset()
    classify_times(handle, 3)  # warm-up
    alone = classify_times(handle, args.runs)

    training_started, done = threading.Event(), threading.Event()

    def fine_tune() -> None:
        config = TrainConfig(mode="finetune", unfreeze="all", epochs=args.epochs, patience=args.epochs)
        try:
            train(trainer, dataset, config, progress=lambda *_: training_started.set())
        finally:
            done.set()  # the first to end ends the measuring

    threads = [threading.Thread(target=fine_tune, daemon=True) for _ in range(args.trainings)]
    for thread in threads:
        thread.start()
    training_started.wait()
    time.sleep(2.0)  # into the epochs
    beside = classify_times(handle, args.runs, keep_going=lambda: not done.is_set())
    for thread in threads:
        thread.join()

    result = {
        "alone_ms": 1000 * statistics.median(alone),
        "beside_training_ms": 1000 * statistics.median(beside) if beside else None,
        "runs_beside": len(beside),
        "trainings": args.trainings,
        "goal": GOAL,
    }
    result["ratio"] = result["beside_training_ms"] / result["alone_ms"] if beside else None
    rows = [
        [
            "classify one photo, efficientnet_lite0 (ONNX Runtime)",
            f"{result['alone_ms']:.1f} ms",
            f"{result['beside_training_ms']:.1f} ms ({len(beside)} runs)" if beside else "training ended first",
            f"{result['ratio']:.2f}x" if beside else "-",
            f"< {GOAL:.0f}x " + ("pass" if beside and result["ratio"] < GOAL else "MISS"),
        ]
    ]
    beside_header = f"while {args.trainings} whole-network fine-tune{'s' if args.trainings > 1 else ''} train"
    print(table(["work", "alone", beside_header, "ratio", "goal"], rows, args.markdown))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    run_report(main, "bench_light_work")
