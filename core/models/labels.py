"""How a model, its weights version and its engine are named for a person and in a file name: one place, no imports,
so the catalogue (core.models.catalog) and the keys (core.models.keys) both read it."""

from __future__ import annotations

LABEL_SEPARATOR = " · "


def _parts(name: str, engine: str | None, weights: str | None) -> list[str]:
    return [name, *([weights] if weights else []), *(["int8"] if engine == "int8" else [])]


def model_label(name: str, engine: str | None, weights: str | None = None) -> str:
    """How a model in an engine is listed: "resnet50 · int8" beside "resnet50". PyTorch and ONNX Runtime fp32
    give the same answers (an fp32 export is verified to), so both are listed by the model's name alone.
    A weights version other than the default is named: "resnet50 · IMAGENET1K_V1 · int8"."""
    return LABEL_SEPARATOR.join(_parts(name, engine, weights))


def model_slug(name: str, engine: str | None, weights: str | None = None) -> str:
    """The same in a file name: "resnet50", "resnet50-int8", "resnet50-IMAGENET1K_V1-int8"."""
    return "-".join(_parts(name, engine, weights))
