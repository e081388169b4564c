"""Peak memory of fine-tune mode: micro-batches sized by core.finetune.micro_batch against the whole batch at once.

    python bench/bench_finetune_memory.py [--per-class 12] [--depths half,all] [--threads 1] [--json PATH]

Each measurement runs in a fresh subprocess (no run inherits another's freed memory): the bundled
efficientnet_lite0 loaded, tests/glyphs.py's rendered digits (10 classes x `--per-class`), then one
epoch of fine-tune mode at the model's own resolution with batches of 32, to each depth:

- ours: the defaults, each batch in micro-batches whose saved activations fit ACTIVATION_BUDGET;
- whole batch: the same with the budget lifted, so each batch of 32 runs through the tail at once
  (what a plain training loop does).

Reported: the process's peak resident memory (getrusage) and its growth during training; the
micro-batch size chosen. Goal: the whole process under 2.0 GB at every depth (Community Cloud gives
an app 2.7 GB, Streamlit and other sessions included). A report, not a test: it always exits 0.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.report import run_report, table  # noqa: E402

GOAL_PEAK_GB = 2.0

CHILD = """
import json, resource, sys
sys.path.insert(0, {root!r})
import torch
torch.set_num_threads({threads})
import core.finetune.micro_batch as micro_batch
import core.finetune.deeper as deeper
import core.finetune.train as train_module
from core.finetune.config import TrainConfig
from core.datasets.labelled import dataset_from_uploads
from core.models.loading import load_model
from tests.glyphs import glyph_uploads

chosen = []
def spy(per_image, batch_size, budget=None):
    chosen.append((per_image, micro_batch.micro_batch_size(per_image, batch_size, budget)))
    return chosen[-1][1]
deeper.micro_batch_size = spy
if {whole}:
    micro_batch.ACTIVATION_BUDGET = 1 << 62
loaded = load_model("efficientnet_lite0")
dataset = dataset_from_uploads(glyph_uploads({per_class}))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
config = TrainConfig(mode="finetune", unfreeze={depth!r}, epochs=1, head_epochs=2, batch_size=32)
train_module.train(loaded, dataset, config)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({{"before": before, "peak": peak, "per_image": chosen[0][0], "micro": chosen[0][1]}}))
"""


def measure(depth: str, *, whole: bool, per_class: int, threads: int) -> dict:
    code = CHILD.format(root=str(ROOT), threads=threads, whole=whole, per_class=per_class, depth=depth)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"the {depth} measurement failed: {result.stderr.strip()[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=12, help="rendered digits per class")
    parser.add_argument("--depths", default="half,all", help="comma-separated: last, half, all")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    rows, figures = [], []
    for depth in args.depths.split(","):
        ours = measure(depth, whole=False, per_class=args.per_class, threads=args.threads)
        whole = measure(depth, whole=True, per_class=args.per_class, threads=args.threads)
        figures.append({"depth": depth, "ours": ours, "whole": whole, "goal_peak_gb": GOAL_PEAK_GB})
        met = "met" if ours["peak"] <= GOAL_PEAK_GB * 1e9 else "missed"
        rows.append(
            [
                depth,
                f"{ours['per_image'] / 2**20:.1f} MB",
                f"{ours['micro']} of 32",
                f"{ours['peak'] / 1e9:.2f} GB (+{(ours['peak'] - ours['before']) / 2**20:.0f} MB)",
                f"{whole['peak'] / 1e9:.2f} GB (+{(whole['peak'] - whole['before']) / 2**20:.0f} MB)",
                f"{ours['peak'] / whole['peak']:.2f}x",
                f"< {GOAL_PEAK_GB} GB: {met}",
            ]
        )
    print(
        f"efficientnet_lite0 fine-tune mode, one epoch at 224 px, batches of 32, "
        f"{10 * args.per_class} rendered digits, {args.threads} torch thread(s)"
    )
    header = ["depth", "saved activations per image", "micro-batch", "peak RSS, ours (growth)",
              "peak RSS, whole batch (growth)", "ours / whole", "goal"]  # fmt: skip
    print(table(header, rows, args.markdown))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    run_report(main, "bench_finetune_memory.py")
