"""Fast mode against one feature pass and a naive loop; fine-tune mode against a linear probe, in one run.

    python bench/bench_finetune.py [--images 200] [--epochs 20] [--naive-epochs 3] [--repeats 1] [--threads N]
                                   [--splits 3] [--per-class 31] [--train-size N] [--skip-finetune] [--markdown]
                                   [--json PATH]

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
(`core.engines.choice.load_handle(..., runtime_choice="onnx")`: fast mode then extracts through the
backbone's ONNX export without its head, core.features.backbone.frozen_features), alternated. The
export is made first, into a temporary ZOOSCOPE_CACHE_DIR, and not timed (it is paid once per
model and weights). The PyTorch figures are the ones the goals above are read on.

Fine-tune mode (issue 12), on images unlike ImageNet's: tests/glyphs.py's rendered digits, 10
classes x `--per-class` (31: 248 training and 62 validation images), plus 20 per class drawn with
another seed as a held-out test set. For each of `--splits` stratified splits (the split seed), in
the same process: a logistic-regression probe (scikit-learn, on the frozen features of the same
training images) and `train` in finetune mode with its defaults and an empty FeatureCache (so its
time includes its own feature pass); accuracy on the validation split and on the held-out set.
Against one extraction pass over the same images: fine-tune mode's seconds in all and per epoch.
Goals: fine-tune accuracy >= probe + 0.15 (averaged over the splits), fine-tune time <= 180 s on a
2-core CPU (wall clock: it is only meaningful on a quiet machine; the load average is printed).
Then natural photos (the example dataset, assets/datasets/textures), on the same splits: fine-tune
mode never below fast mode by more than 0.02.
Forwards are sensitive to other work on a small machine. A report, not a test: it always exits 0.
"""

from __future__ import annotations

import argparse
import atexit
import io
import json
import math
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

from bench.report import run_report, table  # noqa: E402
from core.datasets.labelled import Dataset, dataset_from_uploads, stratified_split  # noqa: E402
from core.engines.choice import load_handle  # noqa: E402
from core.features.backbone import backbone_view, frozen_features  # noqa: E402
from core.finetune.config import TrainConfig  # noqa: E402
from core.finetune.examples import example_dataset  # noqa: E402
from core.finetune.extraction import FeatureCache, extract_features  # noqa: E402
from core.finetune.heads import build_head  # noqa: E402
from core.finetune.train import train  # noqa: E402
from core.images import decode_image  # noqa: E402
from core.models.catalog import get_spec  # noqa: E402
from core.models.keys import ModelKey  # noqa: E402
from core.models.loading import LoadedModel, load_model  # noqa: E402
from core.runtime import configure_threads  # noqa: E402

MODEL = "efficientnet_lite0"
GOALS = {"ours_vs_one_pass": 1.5, "naive_vs_ours": 5.0}
FINETUNE_GOALS = {"gap_over_probe": 0.15, "seconds": 180.0, "natural_vs_fast": -0.02}
TEST_PER_CLASS = 20


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


def time_one_pass(loaded: LoadedModel, dataset: Dataset, runtime: str = "torch") -> float:
    """One extraction pass over every image, in the backbone's runtime (as fast mode runs it)."""
    view = backbone_view(loaded)
    extractor = frozen_features(loaded, view, runtime=runtime)
    start = time.perf_counter()
    extract_features(extractor, loaded.preprocess, dataset.items, batch_size=32)
    return time.perf_counter() - start


def time_ours(loaded: LoadedModel, dataset: Dataset, epochs: int, runtime: str = "torch") -> tuple[float, float]:
    config = TrainConfig(mode="fast", epochs=epochs, patience=epochs)  # patience = epochs: never stops early
    start = time.perf_counter()
    trained = train(loaded, dataset, config, cache=FeatureCache(), runtime=runtime)
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


def _accuracy(trained, items, loaded: LoadedModel) -> float:
    images = [decode_image(item.data) for item in items]
    predicted = trained.predict(images, loaded).argmax(dim=1)
    return float((predicted == torch.tensor([trained.classes.index(item.label) for item in items])).float().mean())


def finetune_vs_probe(loaded: LoadedModel, per_class: int, splits: int, train_size: int | None = None) -> dict:
    """Fine-tune mode against a logistic-regression probe on rendered digits, split by split."""
    from sklearn.linear_model import LogisticRegression

    from tests.glyphs import glyph_uploads

    dataset = dataset_from_uploads(glyph_uploads(per_class))
    held_out = dataset_from_uploads(glyph_uploads(TEST_PER_CLASS, seed=1)).items
    view = backbone_view(loaded)
    start = time.perf_counter()
    features = extract_features(view.module, loaded.preprocess, dataset.items, batch_size=32)
    one_pass = time.perf_counter() - start
    test_features = extract_features(view.module, loaded.preprocess, held_out, batch_size=32).numpy()
    row_of = {item.digest: row for row, item in enumerate(dataset.items)}
    label = {name: i for i, name in enumerate(dataset.classes)}
    y_all = np.array([label[item.label] for item in dataset.items])
    y_test = np.array([label[item.label] for item in held_out])
    runs = []
    for seed in range(splits):
        config = TrainConfig(mode="finetune", seed=seed, train_size=train_size)
        train_items, val_items = stratified_split(dataset.items, val_fraction=config.val_fraction, seed=seed)
        rows_train = [row_of[item.digest] for item in train_items]
        rows_val = [row_of[item.digest] for item in val_items]
        probe = LogisticRegression(max_iter=5000).fit(features[rows_train].numpy(), y_all[rows_train])
        cpu = time.process_time()
        trained = train(loaded, dataset, config, cache=FeatureCache())
        cpu = time.process_time() - cpu
        epochs = [log for log in trained.history if log.epoch >= 1]
        runs.append(
            {
                "seed": seed,
                "probe_val": float(probe.score(features[rows_val].numpy(), y_all[rows_val])),
                "probe_test": float(probe.score(test_features, y_test)),
                "finetune_val": trained.val_accuracy,
                "finetune_test": _accuracy(trained, held_out, loaded),
                "seconds": trained.seconds,
                "cpu_seconds": cpu,
                "epochs_run": trained.epochs_run,
                "best_epoch": trained.best_epoch,
                "epoch_seconds": statistics.mean(log.seconds for log in epochs) if epochs else math.nan,
                "images_per_second": statistics.mean(log.images_per_second for log in epochs) if epochs else math.nan,
            }
        )
    mean = {key: statistics.mean(run[key] for run in runs) for key in runs[0] if key != "seed"}
    return {
        "images": len(dataset.items),
        "train_images": len(dataset.items) - round(len(dataset.items) * TrainConfig().val_fraction),
        "test_images": len(held_out),
        "config": TrainConfig(mode="finetune", train_size=train_size).as_dict(),
        "one_pass_s": one_pass,
        "runs": runs,
        "mean": mean,
        "gap_val": mean["finetune_val"] - mean["probe_val"],
        "gap_test": mean["finetune_test"] - mean["probe_test"],
        "finetune_vs_one_pass": mean["seconds"] / one_pass,
    }


def natural_photos(loaded: LoadedModel, splits: int) -> dict:
    """Fast mode and fine-tune mode (defaults) on the example dataset's photos, the same split for both,
    over `splits` split seeds."""
    dataset = example_dataset()
    cache = FeatureCache()
    runs = []
    for seed in range(splits):
        fast = train(loaded, dataset, TrainConfig(mode="fast", seed=seed), cache=cache)
        finetune = train(loaded, dataset, TrainConfig(mode="finetune", seed=seed), cache=cache)
        runs.append((fast.val_accuracy, finetune.val_accuracy, finetune.seconds))
    fast_val, finetune_val, seconds = (statistics.mean(column) for column in zip(*runs, strict=True))
    return {
        "images": len(dataset.items),
        "fast_val": fast_val,
        "finetune_val": finetune_val,
        "finetune_seconds": seconds,
        "difference": finetune_val - fast_val,
        "worst_difference": min(finetune - fast for fast, finetune, _ in runs),
    }


def print_finetune(report: dict, natural: dict, markdown: bool) -> None:
    mean, goals = report["mean"], FINETUNE_GOALS
    config = report["config"]
    spec_size = f"{get_spec(MODEL).input_size} (the model's own)"
    print(
        f"\nFine-tune mode on rendered digits (tests/glyphs.py): {report['images']} images in 10 classes, "
        f"{report['test_images']} more held out; defaults: unfreeze {config['unfreeze']}, {config['epochs']} epochs, "
        f"training resolution {config['train_size'] or spec_size}, {config['views']} cached views, "
        f"lr {config['lr']:g}; {torch.get_num_threads()} torch threads; load average now {os.getloadavg()[0]:.1f}"
    )
    header = ["split", "probe (val)", "fine-tune (val)", "probe (held out)", "fine-tune (held out)", "seconds",
              "CPU seconds", "epochs (kept)", "s/epoch", "images/s"]  # fmt: skip
    rows = [
        [
            str(run["seed"]),
            f"{run['probe_val']:.3f}",
            f"{run['finetune_val']:.3f}",
            f"{run['probe_test']:.3f}",
            f"{run['finetune_test']:.3f}",
            f"{run['seconds']:.1f}",
            f"{run['cpu_seconds']:.1f}",
            f"{run['epochs_run']} ({run['best_epoch']})",
            f"{run['epoch_seconds']:.1f}",
            f"{run['images_per_second']:.1f}",
        ]
        for run in report["runs"]
    ]
    rows.append(
        ["mean", f"{mean['probe_val']:.3f}", f"{mean['finetune_val']:.3f}", f"{mean['probe_test']:.3f}",
         f"{mean['finetune_test']:.3f}", f"{mean['seconds']:.1f}", f"{mean['cpu_seconds']:.1f}", "",
         f"{mean['epoch_seconds']:.1f}", f"{mean['images_per_second']:.1f}"]
    )  # fmt: skip
    print(table(header, rows, markdown))
    print(
        f"one extraction pass over the {report['images']} images: {report['one_pass_s']:.2f} s; fine-tune mode: "
        f"{mean['seconds']:.1f} s in all ({report['finetune_vs_one_pass']:.1f}x one pass), "
        f"{mean['epoch_seconds']:.1f} s per epoch"
    )
    gap_met = "met" if report["gap_val"] >= goals["gap_over_probe"] else "missed"
    time_met = "met" if mean["seconds"] <= goals["seconds"] else "missed"
    print(
        f"fine-tune - probe = {report['gap_val']:+.3f} on validation, {report['gap_test']:+.3f} held out "
        f"(goal >= +{goals['gap_over_probe']}: {gap_met}); time {mean['seconds']:.0f} s "
        f"(goal <= {goals['seconds']:.0f} s on a quiet 2-core CPU: {time_met})"
    )
    natural_met = "met" if natural["worst_difference"] >= goals["natural_vs_fast"] else "missed"
    print(
        f"natural photos (the example dataset, {natural['images']} photos of brick, grass, gravel; mean over "
        f"the splits): fast {natural['fast_val']:.3f}, fine-tune {natural['finetune_val']:.3f} "
        f"({natural['difference']:+.3f}, worst split {natural['worst_difference']:+.3f}; goal >= "
        f"{goals['natural_vs_fast']} on every split: {natural_met}), fine-tune took {natural['finetune_seconds']:.1f} s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200, help="images from the LFW subset, half per class")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--naive-epochs", type=int, default=3, help="naive epochs actually timed (then extrapolated)")
    parser.add_argument("--repeats", type=int, default=1, help="alternated runs of one pass and ours (medians)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: ZooScope's own)")
    parser.add_argument("--splits", type=int, default=3, help="fine-tune vs probe: stratified splits (seeds)")
    parser.add_argument(
        "--finetune-threads", type=int, default=None, help="fine-tune mode's torch threads (default: ZooScope's own)"
    )
    parser.add_argument("--per-class", type=int, default=31, help="fine-tune vs probe: rendered digits per class")
    parser.add_argument(
        "--train-size", type=int, help="fine-tune vs probe: training resolution (default: the model's own)"
    )
    parser.add_argument("--skip-finetune", action="store_true", help="fast mode only")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    else:
        configure_threads()  # what the app and the command line run with

    dataset = lfw_dataset(args.images)
    loaded = load_model(MODEL)
    size = loaded.spec.input_size
    cache_dir = tempfile.mkdtemp(prefix="zooscope-bench-finetune-")
    atexit.register(shutil.rmtree, cache_dir, ignore_errors=True)  # the exports made for this run only
    os.environ["ZOOSCOPE_CACHE_DIR"] = cache_dir
    in_onnx = load_handle(ModelKey(MODEL), runtime_choice="onnx")
    # The feature extractor's export: made once, not timed.
    frozen_features(in_onnx.torch, backbone_view(in_onnx.torch), runtime=in_onnx.runtime)
    warm = torch.zeros(32, 3, size, size)
    with torch.inference_mode():
        loaded.module(warm)  # warm-up at the batch size used (allocator, kernels)
        in_onnx.forward(warm)

    one_pass_times, ours_times, onnx_pass_times, onnx_ours_times = [], [], [], []
    for _ in range(args.repeats):  # alternated, medians reported
        one_pass_times.append(time_one_pass(loaded, dataset))
        onnx_pass_times.append(time_one_pass(in_onnx.torch, dataset, in_onnx.runtime))
        seconds, accuracy = time_ours(loaded, dataset, args.epochs)
        ours_times.append(seconds)
        seconds, onnx_accuracy = time_ours(in_onnx.torch, dataset, args.epochs, in_onnx.runtime)
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
    figures = {"images": n, "epochs": args.epochs, "naive_epochs": args.naive_epochs, "threads": threads}
    figures |= {"one_pass_s": one_pass, "ours_s": ours, "naive_s": naive, "val_accuracy": accuracy}
    figures |= {"ours_vs_one_pass": ours_vs_pass, "naive_vs_ours": naive_vs_ours, "goals": GOALS}
    figures |= {"onnx_one_pass_s": onnx_pass, "onnx_ours_s": onnx_ours, "onnx_val_accuracy": onnx_accuracy}
    if not args.skip_finetune:
        torch.set_num_threads(args.finetune_threads or configure_threads(force=True))
        figures["finetune_threads"] = torch.get_num_threads()
        report = finetune_vs_probe(loaded, args.per_class, args.splits, args.train_size)
        natural = natural_photos(loaded, args.splits)
        print_finetune(report, natural, args.markdown)
        figures["finetune"] = report | {"natural": natural, "goals": FINETUNE_GOALS, "load": os.getloadavg()}
    if args.json:
        args.json.write_text(json.dumps(figures))
    return 0


if __name__ == "__main__":
    run_report(main, "bench_finetune")
