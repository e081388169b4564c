"""Each catalogue model's published weights versions, one row per version: what the Models page and
`python -m core models --versions` list (accuracy, file size, input size and recipe link from each one's meta)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from core.models.catalog import weights_versions

VERSION_COLUMNS = ("name", "weights", "default", "acc1", "acc5", "size_mb", "input_size", "recipe")


def version_rows(names: Iterable[str], *, only_several: bool = True) -> list[dict[str, Any]]:
    """One row per weights version of each model in `names` (only models with several, unless `only_several`
    is False), in torchvision's order: V1 before V2."""
    rows = []
    for name in names:
        versions = weights_versions(name)
        if only_several and len(versions) < 2:
            continue
        for spec in versions:
            rows.append(
                {
                    "name": name,
                    "weights": spec.version,
                    "default": spec.default_weights,
                    "acc1": spec.acc1,
                    "acc5": spec.acc5,
                    "size_mb": spec.file_size_mb,
                    "input_size": spec.input_size,
                    "recipe": spec.recipe,
                }
            )
    return rows
