"""The example dataset that ships with ZooScope, so that anyone can fine-tune in the first minute.

`assets/datasets/textures/`: brick, grass and gravel, 25 images each, tiles of three CC0 photos from
scikit-image (its README says where they come from and how `make_textures.py` remakes them).
"""

from __future__ import annotations

from pathlib import Path

from core.datasets.labelled import Dataset, dataset_from_folder
from core.progress import Progress

EXAMPLE_FOLDER = Path(__file__).resolve().parents[2] / "assets" / "datasets" / "textures"
EXAMPLE_DESCRIPTION = "brick, grass and gravel: 25 tiles of a CC0 photo each, from scikit-image"


def example_dataset(*, progress: Progress | None = None) -> Dataset:
    """The example dataset, read and checked like any folder of class folders."""
    return dataset_from_folder(EXAMPLE_FOLDER, progress=progress)
