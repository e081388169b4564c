"""Offline models for the benchmarks: torchvision architectures with random weights.

Speed and memory do not depend on the weights' values, so each script writes random ones under
torchvision's real file names into a temporary hub cache and loads them the way the app does.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_random_weights(names: list[str], hub_dir: Path) -> dict[str, Path]:
    """Random weights for each torchvision model, saved under its real file name in `hub_dir`/checkpoints."""
    import gc

    import torch

    from core.models.catalog import get_spec

    paths = {}
    for name in names:
        spec = get_spec(name)
        if spec.source != "torchvision":
            continue
        path = hub_dir / "checkpoints" / spec.file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            model = spec.build()
            torch.save(model.state_dict(), path)
            del model
            gc.collect()
        paths[name] = path
    return paths


def use_hub(hub_dir: Path) -> None:
    """Make torchvision and core.models.weights find only the files in `hub_dir`, and trust them."""
    import torch.hub

    import core.models.weights

    torch.hub.set_dir(str(hub_dir))
    os.environ["ZOOSCOPE_OFFLINE"] = "1"
    os.environ.pop("ZOOSCOPE_WEIGHTS_DIR", None)
    # Our random file can never match the SHA-256 prefix in torchvision's name: skip that check.
    core.models.weights.expected_hash_prefix = lambda file_name: None
