"""What the feature cache buys fast-mode training: whole training vs one feature pass vs a naive loop.

    python bench/bench_finetune.py [--images 200] [--epochs 20] [--naive-epochs 3] [--repeats 1] [--threads 1]
                                   [--markdown] [--json PATH]

Offline and self-contained: the images are skimage's LFW subset (faces vs non-faces, 25x25 grey,
as PNG bytes), the backbone is the bundled EfficientNet-Lite0 (real ImageNet weights). Three timings,
after one warm-up forward (one pass and ours alternate `--repeats` times; medians shown):

- one feature pass: `extract_features` over every image once (decode, the weights' own
  preprocessing, frozen forward), no cache: the floor any training has to pay;
- ours: `core.finetune.train.train` in fast mode for `--epochs` epochs (early stopping off), with an
  empty FeatureCache: one extraction of train + validation images, then every epoch reads cached
  feature vectors;
- naive: the loop many tutorials write: every epoch decodes, preprocesses and runs the frozen
  backbone over every training batch before the head's step, and over the validation images to
  score it. It is timed for `--naive-epochs` epochs and extrapolated linearly to `--epochs`
  (every naive epoch does the same work, so its time is linear in the epochs; the output says so).

Ratios: ours / one feature pass (goal <= 1.5x: the head's epochs cost almost nothing) and
naive / ours (goal >= 5x).

Both runtimes: the feature pass and ours are timed with the backbone in PyTorch and in ONNX Runtime
(`core.engines.load_classifier(..., runtime_choice="onnx")`: fast mode then extracts through the
backbone's ONNX export without its head, core.finetune.backbone.frozen_features), alternated. The
export is made first, into a temporary ZOOSCOPE_CACHE_DIR, and not timed (it is paid once per
model and weights). The PyTorch figures are the ones the goals above are read on.

Forwards are sensitive to other work on a small machine: `--threads 1` gives steadier figures there.
A report, not a test: it always exits 0.
"""

from __future__ import annotations

import argparse
import atexit
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data as skdata  # noqa: E402

from core.engines import load_classifier  # noqa: E402
from core.finetune.backbone import backbone_view, frozen_features  # noqa: E402
from core.finetune.config import TrainConfig  # noqa: E402
from core.finetune.data import Dataset, dataset_from_uploads, stratified_split  # noqa: E402
from core.finetune.extraction import FeatureCache, extract_features  # noqa: E402
from core.finetune.heads import build_head  # noqa: E402
from core.finetune.train import train  # noqa: E402
from core.images import decode_image  # noqa: E402
from core.loading import LoadedModel, load_model  # noqa: E402

MODEL = "efficientnet_lite0"
GOALS = {"ours_vs_one_pass": 1.5, "naive_vs_ours": 5.0}


def lfw_dataset(count: int) -> Dataset:
    images = skdata.lfw_subset()  # 100 faces, then 100 non-faces
    half = min(count // 2, 100)

    def png(array: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)).save(buffer, "PNG")
        return buffer.getvalue()

    return dataset_from_uploads(
        {
            "face": [(f"face_{i:03d}.png", png(a)) for i, a in enumerate(images[:half])],
            "not_face": [(f"other_{i:03d}.png", png(a)) for i, a in enumerate(images[100 : 100 + half])],
        }
    )


def time_one_pass(loaded, dataset: Dataset) -> float:
    """One extraction pass over every image, in the backbone's runtime (as fast mode runs it)."""
    view = backbone_view(loaded)
    extractor = frozen_features(loaded, view)
    start = time.perf_counter()
    extract_features(extractor, loaded.preprocess, dataset.items, batch_size=32)
    return time.perf_counter() - start


def time_ours(loaded, dataset: Dataset, epochs: int) -> tuple[float, float]:
    config = TrainConfig(mode="fast", epochs=epochs, patience=epochs)  # patience = epochs: never stops early
    start = time.perf_counter()
    trained = train(loaded, dataset, config, cache=FeatureCache())
    seconds = time.perf_counter() - start
    assert trained.epochs_run == epochs, trained.epochs_run
    return seconds, trained.val_accuracy


def time_naive(loaded: LoadedModel, dataset: Dataset, epochs: int, config: TrainConfig) -> float:
    """The backbone runs on every batch of every epoch (no cache); same split, head, optimiser, batches."""
    train_items, val_items = stratified_split(dataset.items, val_fraction=config.val_fraction, seed=config.seed)
    index_of = {label: i for i, label in enumerate(dataset.classes)}
    y_train = torch.tensor([index_of[item.label] for item in train_items])
    y_val = torch.tensor([index_of[item.label] for item in val_items])
    view = backbone_view(loaded)
    generator = torch.Generator().manual_seed(config.seed)
    head = build_head("linear", view.feature_dim, len(dataset.classes), generator=generator)
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    criterion = nn.CrossEntropyLoss()

    def features(items) -> torch.Tensor:
        batch = torch.stack([loaded.preprocess(decode_image(item.data)) for item in items])
        with torch.inference_mode():
            return view.module(batch)

    start = time.perf_counter()
    for _ in range(epochs):
        head.train()
        for indices in torch.randperm(len(train_items), generator=generator).split(config.batch_size):
            x = features([train_items[i] for i in indices.tolist()]).clone()
            loss = criterion(head(x), y_train[indices])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        head.eval()
        with torch.inference_mode():
            val = torch.cat(
                [features(val_items[i : i + config.batch_size]) for i in range(0, len(val_items), config.batch_size)]
            )
            criterion(head(val), y_val)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200, help="images from the LFW subset, half per class")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--naive-epochs", type=int, default=3, help="naive epochs actually timed (then extrapolated)")
    parser.add_argument("--repeats", type=int, default=1, help="alternated runs of one pass and ours (medians)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's own)")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    dataset = lfw_dataset(args.images)
    loaded = load_model(MODEL)
    size = loaded.spec.input_size
    cache_dir = tempfile.mkdtemp(prefix="zooscope-bench-finetune-")
    atexit.register(shutil.rmtree, cache_dir, ignore_errors=True)  # the exports made for this run only
    os.environ["ZOOSCOPE_CACHE_DIR"] = cache_dir
    in_onnx = load_classifier(MODEL, runtime_choice="onnx")
    frozen_features(in_onnx, backbone_view(in_onnx))  # the feature extractor's export: made once, not timed
    warm = torch.zeros(32, 3, size, size)
    with torch.inference_mode():
        loaded.module(warm)  # warm-up at the batch size used (allocator, kernels)
        in_onnx.forward(warm)

    one_pass_times, ours_times, onnx_pass_times, onnx_ours_times = [], [], [], []
    for _ in range(args.repeats):  # alternated, medians reported
        one_pass_times.append(time_one_pass(loaded, dataset))
        onnx_pass_times.append(time_one_pass(in_onnx, dataset))
        seconds, accuracy = time_ours(loaded, dataset, args.epochs)
        ours_times.append(seconds)
        seconds, onnx_accuracy = time_ours(in_onnx, dataset, args.epochs)
        onnx_ours_times.append(seconds)
    one_pass, ours = statistics.median(one_pass_times), statistics.median(ours_times)
    onnx_pass, onnx_ours = statistics.median(onnx_pass_times), statistics.median(onnx_ours_times)
    naive_timed = time_naive(loaded, dataset, args.naive_epochs, TrainConfig(epochs=args.epochs))
    naive = naive_timed * args.epochs / args.naive_epochs

    ours_vs_pass = ours / one_pass
    naive_vs_ours = naive / ours
    n = len(dataset.items)
    rows = [
        ("one feature pass", f"{n} images, no cache, PyTorch", one_pass, ""),
        (
            "one feature pass, ONNX Runtime",
            f"{n} images, no cache",
            onnx_pass,
            f"{onnx_pass / one_pass:.2f}x PyTorch's",
        ),
        ("ours (fast mode)", f"{args.epochs} epochs, extraction included", ours, f"{ours_vs_pass:.2f}x one pass"),
        (
            "ours, ONNX Runtime",
            f"{args.epochs} epochs, extraction included (validation accuracy {onnx_accuracy:.3f})",
            onnx_ours,
            f"{onnx_ours / ours:.2f}x PyTorch's",
        ),
        (
            "naive loop",
            f"{args.naive_epochs} epochs timed ({naive_timed:.2f} s), extrapolated linearly to {args.epochs}",
            naive,
            f"{naive_vs_ours:.1f}x ours",
        ),
    ]
    threads = torch.get_num_threads()
    print(f"{MODEL}, {n} LFW images (25x25 -> {size} px), torch {torch.__version__}, {threads} thread(s)")
    print(f"validation accuracy of our model after {args.epochs} epochs: {accuracy:.3f}")
    if args.markdown:
        print("\n| run | what | seconds | ratio |\n| --- | --- | ---: | --- |")
        for name, what, seconds, ratio in rows:
            print(f"| {name} | {what} | {seconds:.2f} | {ratio} |")
        print()
    else:
        for name, what, seconds, ratio in rows:
            print(f"{name:30} {seconds:8.2f} s  {ratio:18} {what}")
    goal_pass = "met" if ours_vs_pass <= GOALS["ours_vs_one_pass"] else "missed"
    goal_naive = "met" if naive_vs_ours >= GOALS["naive_vs_ours"] else "missed"
    print(f"ours / one feature pass = {ours_vs_pass:.2f}x (goal <= {GOALS['ours_vs_one_pass']}x: {goal_pass})")
    print(
        f"naive / ours = {naive_vs_ours:.1f}x (goal >= {GOALS['naive_vs_ours']}x: {goal_naive}); the naive time is "
        f"{args.naive_epochs} timed epochs extrapolated linearly to {args.epochs}"
    )
    if args.json:
        figures = {"images": n, "epochs": args.epochs, "naive_epochs": args.naive_epochs, "threads": threads}
        figures |= {"one_pass_s": one_pass, "ours_s": ours, "naive_s": naive, "val_accuracy": accuracy}
        figures |= {"ours_vs_one_pass": ours_vs_pass, "naive_vs_ours": naive_vs_ours, "goals": GOALS}
        figures |= {"onnx_one_pass_s": onnx_pass, "onnx_ours_s": onnx_ours, "onnx_val_accuracy": onnx_accuracy}
        args.json.write_text(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
