""" "Not sure: unlike the images it was trained on" against the confidence threshold alone, on real photos.

    python bench/bench_unlike.py [--threads N] [--markdown] [--json PATH]

efficientnet_lite0 (its real offline weights) fine-tuned in fast mode, with the app's defaults, on three labelled
sets that ship in packages: the example textures (brick, grass, gravel: 75 tiles), five objects (random crops of
five scikit-image photos: an astronaut, a coffee, a rocket, a cat, a horse; 16 each) and LFW's faces against
non-faces (60 + 60 of scikit-image's `lfw_subset`). For each model:

- photos of other things: scikit-image's, scikit-learn's and matplotlib's sample photos (bench.held_out_photos) and
  the app's example photos, less any photo a set was made from, each with the check set's 13 variations
  (core.datasets.check_images): the share flagged "not sure" by the confidence threshold alone (the default from
  the validation images, core.finetune.threshold), by the similarity to the training images alone
  (core.finetune.familiarity), and by either;
- held-out images of its own classes, never trained or validated on (other crops of the same photos; the 80
  faces and non-faces left): the share that still gets an answer, and how many of those are right.

Both thresholds are the models' defaults: 95% of the validation images pass each. Then the same features judged
by other measures at that same operating point (5% of validation images refused), with the area under the ROC
curve (in-domain held-out against other photos): k-NN cosine with k = 1 (what the app keeps), 3 and 5, and
Mahalanobis distance to the nearest class mean (shared covariance, shrinkage 0.5). Features are the head's
inputs (TrainedModel.head_inputs), as the app computes them. A report, not a test: it always exits 0.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import run_report, table  # noqa: E402

OBJECTS = ("astronaut", "coffee", "rocket", "chelsea", "horse")
EXTRA_PHOTOS = ("chelsea", "coffee", "rocket", "brick", "gravel", "coins", "moon", "text", "hubble_deep_field")
MAHALANOBIS_SHRINKAGE = 0.5


def _rgb(array):
    from bench.held_out_photos import _rgb as rgb

    return rgb(np.asarray(array))


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "PNG")
    return buffer.getvalue()


def _crops(photo, count: int, seed: int, sides: tuple[float, float] = (0.45, 0.9)) -> list:
    """`count` random crops (`sides`: the least and most of each side), a mirror image half the time."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(count):
        scale = rng.uniform(*sides)
        w, h = int(photo.width * scale), int(photo.height * scale)
        x, y = int(rng.integers(0, photo.width - w + 1)), int(rng.integers(0, photo.height - h + 1))
        crop = photo.crop((x, y, x + w, y + h))
        crops.append(crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else crop)
    return crops


def labelled_sets() -> dict[str, dict]:
    """name -> {dataset, held-out (label, image) pairs, the photos it was made from}."""
    import skimage.data

    from core.datasets.labelled import dataset_from_uploads
    from core.finetune.examples import example_dataset

    sources = {name: _rgb(getattr(skimage.data, name)()) for name in ("brick", "grass", "gravel", *OBJECTS)}
    # New tiles, 90-145 pixels (the example's are 102) anywhere on the photo, not on the example's grid.
    textures_held_out = [
        (name, crop) for name in ("brick", "grass", "gravel") for crop in _crops(sources[name], 20, 1, (0.18, 0.28))
    ]
    objects = {
        name: [(f"{name}_{i}.png", _png(c)) for i, c in enumerate(_crops(sources[name], 16, 0))] for name in OBJECTS
    }
    objects_held_out = [(name, crop) for name in OBJECTS for crop in _crops(sources[name], 12, 1)]
    lfw = skimage.data.lfw_subset()  # 100 faces, then 100 non-faces, 25 x 25
    faces = {
        label: [(f"{label}_{i}.png", _png(_rgb(lfw[offset + i]))) for i in range(60)]
        for label, offset in (("face", 0), ("other", 100))
    }
    faces_held_out = [
        (label, _rgb(lfw[offset + i])) for label, offset in (("face", 0), ("other", 100)) for i in range(60, 100)
    ]
    # astronaut and grace_hopper are photos of people, faces: left out of the faces set's "other things"
    return {
        "textures": _set(example_dataset(), textures_held_out, {"brick", "grass", "gravel"}),
        "objects": _set(dataset_from_uploads(objects), objects_held_out, set(OBJECTS)),
        "faces": _set(dataset_from_uploads(faces), faces_held_out, {"astronaut", "grace_hopper"}),
    }


def _set(dataset, held_out: list, made_from: set[str]) -> dict:
    return {"dataset": dataset, "held_out": held_out, "made_from": made_from}


def other_photos() -> dict[str, list]:
    """photo name -> the photo and its 12 variations (core.datasets.check_images)."""
    import skimage.data

    from bench.held_out_photos import photos
    from core.datasets.check_images import check_images

    found = photos() | {name: _rgb(getattr(skimage.data, name)()) for name in EXTRA_PHOTOS}
    variations = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, photo in found.items():
            path = Path(folder) / name
            path.mkdir()
            photo.save(path / f"{name}.jpg", quality=95)
            variations[name] = check_images(path)
    return variations


def _auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """P(an in-domain image scores above a photo of something else), ties counted half."""
    greater = (inside[:, None] > outside[None, :]).mean()
    return float(greater + 0.5 * (inside[:, None] == outside[None, :]).mean())


def _knn(train, x, k: int) -> np.ndarray:
    import torch.nn.functional as F

    similarities = F.normalize(x, dim=1) @ F.normalize(train, dim=1).T
    return similarities.topk(min(k, len(train)), dim=1).values.mean(dim=1).numpy()


def _mahalanobis(train, labels, x) -> np.ndarray:
    """Minus the squared Mahalanobis distance to the nearest class mean (higher: more alike)."""
    import torch

    train, x = train.double(), x.double()
    means = torch.stack([train[labels == c].mean(0) for c in labels.unique()])
    centred = train - means[labels]
    covariance = centred.T @ centred / len(train)
    dim = covariance.shape[0]
    spherical = covariance.trace() / dim * torch.eye(dim, dtype=torch.float64)
    precision = torch.linalg.inv((1 - MAHALANOBIS_SHRINKAGE) * covariance + MAHALANOBIS_SHRINKAGE * spherical)
    diffs = x[:, None, :] - means[None]
    return (-torch.einsum("ncd,de,nce->nc", diffs, precision, diffs).min(dim=1).values).numpy()


def measure_set(loaded, name: str, spec: dict, others: dict[str, list]) -> dict:
    import torch

    from core.datasets.labelled import stratified_split
    from core.features.embedding import Embedder
    from core.finetune.config import TrainConfig
    from core.finetune.extraction import decode_item
    from core.finetune.train import train

    dataset, config = spec["dataset"], TrainConfig()
    started = time.perf_counter()
    trained = train(loaded, dataset, config)
    train_s = time.perf_counter() - started
    embedder = Embedder(name, trained.head_inputs(loaded), loaded.preprocess, loaded.device)

    def embed(images: list) -> torch.Tensor:
        return torch.cat([embedder.embed_images(images[i : i + 16]) for i in range(0, len(images), 16)])

    train_items, val_items = stratified_split(dataset.items, val_fraction=config.val_fraction, seed=config.seed)
    f_train = embed([decode_item(item) for item in train_items])
    f_val = embed([decode_item(item) for item in val_items])
    y_train = torch.tensor([trained.classes.index(item.label) for item in train_items])
    held_labels = [label for label, _ in spec["held_out"]]
    f_held = embed([image for _, image in spec["held_out"]])
    other_names = [photo for photo in others if photo not in spec["made_from"]]
    f_other = embed([image for photo in other_names for image in others[photo]])

    familiar = trained.familiarity
    features = {"val": f_val, "held": f_held, "other": f_other}
    with torch.inference_mode():
        probs = {part: trained.head(f).softmax(dim=1) for part, f in features.items()}
    similarity = {part: familiar.similarity(features[part]).numpy() for part in ("held", "other")}
    confident = {part: (p.max(dim=1).values >= trained.threshold).numpy() for part, p in probs.items()}
    alike = {part: s >= familiar.min_similarity for part, s in similarity.items()}
    answered = confident["held"] & alike["held"]
    guesses = [trained.classes[i] for i in probs["held"].argmax(dim=1).tolist()]
    right = np.array([guess == label for guess, label in zip(guesses, held_labels, strict=True)])

    scores = {"max softmax (confidence)": {part: p.max(dim=1).values.numpy() for part, p in probs.items()}}
    for k in (1, 3, 5):
        scores[f"k-NN cosine, k = {k}"] = {part: _knn(f_train, f, k) for part, f in features.items()}
    mahalanobis = f"Mahalanobis (shrinkage {MAHALANOBIS_SHRINKAGE})"
    scores[mahalanobis] = {part: _mahalanobis(f_train, y_train, f) for part, f in features.items()}
    measures = {}
    for measure, by_part in scores.items():
        cut = np.quantile(by_part["val"], 0.05)  # 95% of the validation images pass
        measures[measure] = {
            "other_flagged": float((by_part["other"] < cut).mean()),
            "held_out_pass": float((by_part["held"] >= cut).mean()),
            "auroc": _auroc(by_part["held"], by_part["other"]),
        }
    return {
        "classes": trained.classes,
        "train_images": len(train_items),
        "val_images": len(val_items),
        "val_accuracy": trained.val_accuracy,
        "train_s": train_s,
        "threshold": trained.threshold,
        "min_similarity": familiar.min_similarity,
        "other_photos": len(other_names),
        "other_images": len(f_other),
        "held_out_images": len(f_held),
        "other_flagged_by_confidence": float(1 - confident["other"].mean()),
        "other_flagged_by_similarity": float(1 - alike["other"].mean()),
        "other_flagged_by_either": float(1 - (confident["other"] & alike["other"]).mean()),
        "other_max_similarity": float(similarity["other"].max()),
        "held_out_pass_confidence": float(confident["held"].mean()),
        "held_out_pass_similarity": float(alike["held"].mean()),
        "held_out_answered": float(answered.mean()),
        "held_out_answered_right": float(right[answered].mean()) if answered.any() else float("nan"),
        "held_out_min_similarity": float(similarity["held"].min()),
        "measures": measures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import torch

    from core.models.loading import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model("efficientnet_lite0")
    others = other_photos()
    report = {name: measure_set(loaded, name, spec, others) for name, spec in labelled_sets().items()}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    _print(report, args.markdown)


def _print(report: dict, markdown: bool) -> None:
    header = ["set", "val acc", "thresholds (conf / sim)", "other photos flagged: confidence alone", "similarity alone",
              "either", "held-out answered (conf alone → both)", "answered right"]  # fmt: skip
    rows = [
        [f"{name} ({len(r['classes'])} classes, {r['train_images']} train)", f"{r['val_accuracy']:.0%}",
         f"{r['threshold']:.0%} / {r['min_similarity']:.2f}",
         f"{r['other_flagged_by_confidence']:.0%} of {r['other_images']}", f"{r['other_flagged_by_similarity']:.0%}",
         f"{r['other_flagged_by_either']:.0%}",
         f"{r['held_out_pass_confidence']:.0%} → {r['held_out_answered']:.0%} of {r['held_out_images']}",
         f"{r['held_out_answered_right']:.0%}"]
        for name, r in report.items()
    ]  # fmt: skip
    print(table(header, rows, markdown))
    print()
    header = ["set", "measure", "other photos flagged", "held-out pass", "AUROC"]
    rows = [
        [name, measure, f"{m['other_flagged']:.0%}", f"{m['held_out_pass']:.0%}", f"{m['auroc']:.3f}"]
        for name, r in report.items()
        for measure, m in r["measures"].items()
    ]
    print(table(header, rows, markdown))


if __name__ == "__main__":
    run_report(main, "bench_unlike")
