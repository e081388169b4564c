"""The job queue's activation estimates (core.models.footprints) against a forward's measured peak.

    python bench/bench_footprints.py [--models resnet50,vgg16,vit_b_16,efficientnet_b0,mobilenet_v3_large]
                                     [--batch 16] [--size 224]

For each model, in a fresh subprocess (one torch thread, random weights, no download): one warm-up
forward of one image, then the growth of the process's peak resident memory over a forward of
`batch` images, per image, beside the estimate; the ratio estimate/measured should stay at or above 1
(the queue admits by the estimate: under is an OOM risk, over only makes work wait).

A report, not a test: it always exits 0.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = "resnet50,vgg16,vit_b_16,efficientnet_b0,mobilenet_v3_large,densenet121,convnext_tiny,swin_t"

CHILD = """
import gc, resource, sys, torch, torchvision
torch.set_num_threads(1)
name, batch, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
model = torchvision.models.get_model(name, weights=None).eval()
images = torch.zeros(batch, 3, size, size)
with torch.inference_mode():
    model(images[:1])
gc.collect()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with torch.inference_mode():
    model(images)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 / batch)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from core.models.catalog import get_spec
    from core.models.footprints import activations_mb

    print(f"{'model':<22}{'measured MB/image':>18}{'estimate':>10}{'ratio':>8}")
    for name in args.models.split(","):
        run = [sys.executable, "-c", CHILD, name, str(args.batch), str(args.size)]
        measured = float(subprocess.run(run, capture_output=True, text=True, check=True).stdout.strip())
        estimate = activations_mb(args.size, get_spec(name).family)
        print(f"{name:<22}{measured:>18.1f}{estimate:>10.1f}{estimate / measured:>8.2f}")


if __name__ == "__main__":
    main()
