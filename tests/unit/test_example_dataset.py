"""The example dataset in assets/: what make_textures.py makes, licence stated, small, and it trains."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.datasets.labelled import DatasetError, dataset_from_folder
from core.finetune.config import TrainConfig
from core.finetune.examples import EXAMPLE_FOLDER, example_dataset
from core.finetune.train import train

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "assets" / "datasets" / "make_textures.py"
CLASSES = ["brick", "grass", "gravel"]


def load_script():
    spec = importlib.util.spec_from_file_location("make_textures", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_the_shipped_images_are_what_the_script_makes(tmp_path):
    written = load_script().make(tmp_path)
    assert sorted(written) == CLASSES
    made = sorted(path.relative_to(tmp_path) for paths in written.values() for path in paths)
    shipped = sorted(path.relative_to(EXAMPLE_FOLDER) for path in EXAMPLE_FOLDER.rglob("*.png"))
    assert made == shipped and len(made) == 75
    for name in made:
        assert np.array_equal(pixels(tmp_path / name), pixels(EXAMPLE_FOLDER / name)), name


def test_the_tiles_do_not_overlap():
    from skimage import data

    tiles = load_script().tiles(data.brick())
    assert len(tiles) == 25 and all(tile.shape == (102, 102) for tile in tiles)
    assert np.array_equal(tiles[6], data.brick()[102:204, 102:204])  # row 1, column 1


def test_the_example_is_small_and_its_licence_is_stated_beside_it():
    folder = EXAMPLE_FOLDER.parent
    assert sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) <= 3 * 1024 * 1024
    readme = (EXAMPLE_FOLDER / "README.md").read_text()
    assert readme.count("CC0") >= 3 and all(f"`{label}/`" in readme for label in CLASSES)
    assert "make_textures.py" in readme


def test_example_dataset_reads_three_classes_of_25_with_nothing_skipped():
    dataset = example_dataset()
    assert dataset.classes == CLASSES
    assert dataset.counts() == dict.fromkeys(CLASSES, 25)
    assert not dataset.skipped and not dataset.warnings  # the README beside the class folders is no image
    dataset.validate()


def test_fast_mode_learns_the_example(lite0):
    trained = train(lite0, example_dataset(), TrainConfig(mode="fast", epochs=30))
    assert trained.val_accuracy >= 0.9
    assert sum(trained.metrics.per_class_frame()["support"]) == 15  # 5 of each class held back


# --- any folder of class folders ------------------------------------------------------------------


def png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, "PNG")
    return buffer.getvalue()


def test_dataset_from_folder_reads_class_folders_and_skips_what_is_not_an_image(tmp_path):
    (tmp_path / "cat" / "indoors").mkdir(parents=True)
    (tmp_path / "dog").mkdir()
    (tmp_path / ".cache").mkdir()
    (tmp_path / "cat" / "1.png").write_bytes(png((255, 0, 0)))
    (tmp_path / "cat" / "indoors" / "2.png").write_bytes(png((200, 0, 0)))
    (tmp_path / "cat" / ".DS_Store").write_bytes(b"\x00\x01")
    (tmp_path / "dog" / "1.png").write_bytes(png((0, 0, 255)))
    (tmp_path / "dog" / "notes.txt").write_text("a good dog")
    (tmp_path / ".cache" / "x.png").write_bytes(png((0, 255, 0)))
    (tmp_path / "LICENSE.txt").write_text("CC0")

    dataset = dataset_from_folder(tmp_path)
    assert dataset.classes == ["cat", "dog"]
    assert sorted((item.label, item.name) for item in dataset.items) == [
        ("cat", "1.png"),
        ("cat", "indoors/2.png"),
        ("dog", "1.png"),
    ]
    assert [entry.name for entry in dataset.skipped] == ["dog/notes.txt"]


def test_dataset_from_folder_refuses_a_file(tmp_path):
    (tmp_path / "data.zip").write_bytes(b"PK")
    with pytest.raises(DatasetError, match="not a folder"):
        dataset_from_folder(tmp_path / "data.zip")
