"""Where the near-duplicate threshold comes from: similarities of planted copies against distinct images.

    python bench/bench_duplicates.py [--model efficientnet_lite0] [--runtime auto] [--threads 1]
                                     [--markdown] [--json PATH]

The images are tests/planted.py's: 22 distinct photos (the example photos and skimage's), each with
three copies made in advance (half size re-saved as JPEG quality 75, a 90% crop, a mirror image), and
hard negatives: the texture tiles of the example dataset, the left and right halves of each photo,
skimage's LFW faces and non-faces. Everything is embedded as the app does it (core.features.embedding, in the
runtime the app would choose: ONNX Runtime on the CPU), and the cosine similarities are measured:

- each copy against its original (what the threshold must reach);
- every pair of images of different photos, copies included (what it must stay above);
- the threshold halfway between the two (the widest margin on both sides), against
  core.features.analysis.DEFAULT_DUPLICATE_THRESHOLD;
- the groups core.features.analysis.find_duplicates makes at the default: every copy with its original, and no
  group holding two photos;
- for a range of thresholds, the copies found and the share of hard-negative pairs that would merge.

Offline and deterministic. A report, not a test: it always exits 0 (tests/unit/test_features.py
asserts the groups).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.report import run_report, table  # noqa: E402

SWEEP = (0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def embed_bytes(embedder, blobs: list[bytes]) -> np.ndarray:
    from core.datasets.sources import from_uploads
    from core.features.analysis import embed, unit_vectors

    embeddings = embed(embedder, from_uploads([(str(i), data) for i, data in enumerate(blobs)]))
    assert not embeddings.failures, embeddings.failures
    return unit_vectors(embeddings.vectors)


def pair_values(unit: np.ndarray, groups: list[str], *, same: bool) -> np.ndarray:
    """Cosine of every pair (i < j) whose groups are equal (same=True) or differ."""
    similarity = unit @ unit.T
    labels = np.asarray(groups)
    mask = (labels[:, None] == labels[None, :]) if same else (labels[:, None] != labels[None, :])
    return similarity[np.triu(mask, 1)]


def measure(embedder) -> dict:
    from core.datasets.sources import from_uploads
    from core.features.analysis import DEFAULT_DUPLICATE_THRESHOLD, embed, find_duplicates
    from tests.faces import lfw_pngs
    from tests.planted import ALTERATIONS, halves, planted_set, texture_tiles

    planted = planted_set()
    embeddings = embed(embedder, from_uploads([(item.name, item.data) for item in planted]))
    unit = embeddings.unit
    index = {(item.photo, item.alteration): i for i, item in enumerate(planted)}
    photos = list(dict.fromkeys(item.photo for item in planted))
    copies = {
        alteration: {photo: float(unit[index[photo, None]] @ unit[index[photo, alteration]]) for photo in photos}
        for alteration in ALTERATIONS
    }
    owner = [item.photo for item in planted]
    similarity = unit @ unit.T
    different = np.triu(np.asarray(owner)[:, None] != np.asarray(owner)[None, :], 1)
    i, j = np.unravel_index(np.argmax(np.where(different, similarity, -np.inf)), similarity.shape)
    closest_distinct = {"similarity": float(similarity[i, j]), "pair": [planted[i].name, planted[j].name]}
    weakest = min((value, photo, alteration) for alteration, row in copies.items() for photo, value in row.items())
    midpoint = (closest_distinct["similarity"] + weakest[0]) / 2

    groups = find_duplicates(embeddings, DEFAULT_DUPLICATE_THRESHOLD)
    expected = sorted(sorted(index[photo, alt] for alt in (None, *ALTERATIONS)) for photo in photos)
    found_groups = sorted(groups)
    group_of = {k: number for number, group in enumerate(groups) for k in group}
    copies_found = sum(
        1
        for photo in photos
        for alteration in ALTERATIONS
        if group_of.get(index[photo, alteration], -1) == group_of.get(index[photo, None], -2)
    )
    false_merges = [[planted[k].name for k in group] for group in groups if len({planted[k].photo for k in group}) > 1]

    tiles = texture_tiles()
    tile_unit = embed_bytes(embedder, [data for _, _, data in tiles])
    textures = [texture for texture, _, _ in tiles]
    half_pairs = halves()
    half_unit = embed_bytes(embedder, [data for _, left, right in half_pairs for data in (left, right)])
    half_values = np.array([half_unit[2 * k] @ half_unit[2 * k + 1] for k in range(len(half_pairs))])
    faces, others = lfw_pngs()
    lfw_unit = embed_bytes(embedder, [*faces, *others])
    kinds = ["face"] * len(faces) + ["other"] * len(others)
    negatives = {
        "tiles of one texture": pair_values(tile_unit, textures, same=True),
        "tiles of different textures": pair_values(tile_unit, textures, same=False),
        "left and right halves of one photo": half_values,
        "LFW faces (25 px)": pair_values(lfw_unit[: len(faces)], ["face"] * len(faces), same=True),
        "LFW face vs non-face (25 px)": pair_values(lfw_unit, kinds, same=False),
    }
    all_copies = np.array([value for row in copies.values() for value in row.values()])
    sweep = [
        {
            "threshold": t,
            "copies_found": int((all_copies >= t).sum()),
            "distinct_pairs_above": int((similarity[different] >= t).sum()),
            **{name: float((values >= t).mean()) for name, values in negatives.items()},
        }
        for t in SWEEP
    ]
    return {
        "model": embedder.name,
        "runtime": embedder.runtime,
        "photos": len(photos),
        "copies": {alt: row for alt, row in copies.items()},
        "weakest_copy": {"similarity": weakest[0], "photo": weakest[1], "alteration": weakest[2]},
        "closest_distinct": closest_distinct,
        "midpoint": midpoint,
        "default": DEFAULT_DUPLICATE_THRESHOLD,
        "groups_as_planted": found_groups == expected,
        "copies_found": copies_found,
        "copies_total": len(photos) * len(ALTERATIONS),
        "false_merges": false_merges,
        "negatives": {
            name: {
                "pairs": len(values),
                "max": float(values.max()),
                "median": float(np.median(values)),
                "above_default": float((values >= DEFAULT_DUPLICATE_THRESHOLD).mean()),
            }
            for name, values in negatives.items()
        },  # fmt: skip
        "sweep": sweep,
    }


def report(data: dict, markdown: bool) -> str:
    lines = [
        f"{data['model']} ({data['runtime']}), {data['photos']} distinct photos, {data['copies_total']} planted copies",
        "",
    ]
    rows = []
    for alteration, row in data["copies"].items():
        values = sorted(row.items(), key=lambda item: item[1])
        rows.append([f"copy vs original: {alteration}", f"{values[0][1]:.3f} ({values[0][0]})",
                     f"{np.median(list(row.values())):.3f}", f"{values[-1][1]:.3f}"])  # fmt: skip
    closest = data["closest_distinct"]
    rows.append(["two different photos (copies included)", "", "", f"{closest['similarity']:.3f} "
                 f"({' / '.join(closest['pair'])})"])  # fmt: skip
    for name, values in data["negatives"].items():
        rows.append([f"hard negatives: {name} ({values['pairs']} pairs)", "", f"{values['median']:.3f}",
                     f"{values['max']:.3f}"])  # fmt: skip
    lines.append(table(["cosine similarity", "min", "median", "max"], rows, markdown))
    weakest = data["weakest_copy"]
    lines += [
        "",
        f"gap: the most similar different photos {closest['similarity']:.3f}, the least similar copy "
        f"{weakest['similarity']:.3f} ({weakest['photo']}, {weakest['alteration']}); halfway: {data['midpoint']:.3f}; "
        f"the default threshold is {data['default']}",
        f"at the default: {data['copies_found']} of {data['copies_total']} copies grouped with their original; "
        f"groups exactly as planted: {data['groups_as_planted']}; false merges: {len(data['false_merges'])}",
        "",
    ]
    names = list(data["negatives"])
    header = ["threshold", f"copies found (of {data['copies_total']})", "pairs of different photos above",
              *[f"{name}: pairs above" for name in names]]  # fmt: skip
    sweep_rows = [[f"{r['threshold']:.2f}", str(r["copies_found"]), str(r["distinct_pairs_above"]),
                   *[f"{r[name]:.0%}" for name in names]] for r in data["sweep"]]  # fmt: skip
    lines.append(table(header, sweep_rows, markdown))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--runtime", default=None, help="auto (default), torch, onnx")
    parser.add_argument("--threads", type=int, default=None, help="torch (and ONNX Runtime) threads")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    cache = tempfile.mkdtemp(prefix="zooscope-bench-duplicates-")
    atexit.register(shutil.rmtree, cache, ignore_errors=True)  # the exports made for this run only
    os.environ.setdefault("ZOOSCOPE_CACHE_DIR", cache)
    from core.engines.choice import load_handle
    from core.features.embedding import embedder_for
    from core.models.keys import ModelKey

    model = load_handle(ModelKey(args.model), runtime_choice=args.runtime)
    embedder = embedder_for(model.torch, runtime=model.runtime)
    data = measure(embedder)
    print(report(data, args.markdown))
    if args.json:
        args.json.write_text(json.dumps(data))


if __name__ == "__main__":
    run_report(main, "bench_duplicates.py")
