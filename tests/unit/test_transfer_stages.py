"""Every stage of the real efficientnet_lite0 in one pass (core.features.stages), and `python -m core transfer`
on a tiny zip of class folders: the JSON's shape, the table, and bad data as one line with exit 2."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from core.datasets.check_images import EXAMPLES_DIR
from core.features.embedding import embedder_for
from core.features.stages import PENULTIMATE, stage_features, stage_points
from tests.cli import run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PER_CLASS = 6


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_every_stage_in_network_order_and_the_last_is_the_embedding(lite0):
    photos = [path.read_bytes() for path in sorted(EXAMPLES_DIR.glob("*.jpg"))]
    blobs = [photos[0], b"not an image", *photos[1:]]
    found = stage_features(lite0, blobs, batch_size=2)

    names = [point.name for point in found.points]
    assert names[-1] == PENULTIMATE
    assert names == [point.name for point in stage_points(lite0) if point.name in names]  # network order kept
    assert [point.index for point in found.points] == list(range(len(names)))
    assert found.points[-1].relative_depth == 1.0
    assert all(found.features[point.name].shape == (3, point.dim) for point in found.points)
    assert [position for position, _ in found.failures] == [1]

    embedder = embedder_for(lite0, runtime="torch")
    expected = embedder.embed_images([embedder.decode(data) for data in photos])
    torch.testing.assert_close(found.penultimate, expected, atol=1e-4, rtol=0)


@pytest.fixture
def tiny_zip(tmp_path: Path) -> Path:
    """2 classes x 6 crops of two example photos, small (cheap to decode)."""
    archive = tmp_path / "tiny.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for label in ("chelsea", "coffee"):
            with Image.open(EXAMPLES_DIR / f"{label}.jpg") as opened:
                photo = opened.convert("RGB").resize((200, 150))
            for number in range(PER_CLASS):
                crop = photo.crop((8 * number, 4 * number, 8 * number + 140, 4 * number + 110))
                out.writestr(f"{label}/{number}.jpg", jpeg(crop))
    return archive


def test_transfer_json_has_every_stage_in_order_and_the_best(capsys, tiny_zip):
    code, out, err = run(capsys, "transfer", str(tiny_zip), "--format", "json")
    assert code == 0, err
    payload = json.loads(out)
    (name,) = payload["backbones"]
    assert name == "efficientnet_lite0"
    result = payload["backbones"][name]
    stages = result["stages"]
    assert [set(stage) for stage in stages] == [{"stage", "relative_depth", "dim", "accuracy", "std"}] * len(stages)
    assert stages[-1]["stage"] == PENULTIMATE and stages[-1]["dim"] == 1280
    depths = [stage["relative_depth"] for stage in stages]
    assert depths == sorted(depths) and depths[-1] == 1.0
    assert all(0.0 <= stage["accuracy"] <= 1.0 for stage in stages)
    best = max(stages, key=lambda stage: stage["accuracy"])["accuracy"]
    assert next(stage for stage in stages if stage["stage"] == result["best"])["accuracy"] == best
    assert "Features from every stage" in err  # progress on stderr, never in the JSON


def test_bad_data_is_one_line_and_exit_2(capsys, tmp_path):
    one_class = tmp_path / "one.zip"
    with zipfile.ZipFile(one_class, "w") as out:
        for number in range(3):
            out.writestr(f"cat/{number}.jpg", jpeg(Image.new("RGB", (64, 64), (number * 60, 90, 30))))
    code, out, err = run(capsys, "transfer", str(one_class))
    assert (code, out) == (2, "")
    (line,) = [line for line in err.splitlines() if line.startswith("error: ")]
    assert "at least 2 classes" in line and "Traceback" not in err

    code, _, err = run(capsys, "transfer", str(one_class), *[f"--backbone=m{i}" for i in range(4)])
    assert code == 2 and "one to 3 backbones" in err
