"""The one reader of the family table over a built model: its paths and patterns as that model's
concrete module paths.

The table (core.models.families) names modules by dotted paths whose integer parts index a
module's children by position, negative ones from the end ("classifier.-1" is the last child of
`classifier`), and lists stage ends and equal blocks as patterns: "features.*" (every child of
`features`), "features.*MaxPool2d" (every child of that class), "encoder.layers.*/4" (the children
in 4 runs of equal length: the last child of each run). Every part of the app that reads the table
(Inside's anatomy and stage maps, fine-tuning's depths, Grad-CAM, the features backbone) resolves
it here, so they all name the same modules.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch.nn as nn

from core.errors import ZooScopeError
from core.models.families import FamilyTraits

# "X.*", "X.*Kind" or "X.*/N" (and "*" for the model's own children): X's children, those of class
# Kind, or the last of each of N runs of equal length.
_PATTERN = re.compile(r"^(?:(?P<parent>.+)\.)?\*(?P<kind>[A-Za-z_]\w*)?(?:/(?P<runs>[1-9]\d*))?$")


def _child_key(module: nn.Module, part: str) -> str | None:
    """The key of `module`'s child that `part` names (a key, or a position), or None."""
    if part.lstrip("-").isdigit():
        children = list(module._modules)
        try:
            part = children[int(part)]
        except IndexError:
            return None
    return part if module._modules.get(part) is not None else None


def resolve_layer(model: nn.Module, path: str, model_name: str = "the model") -> tuple[nn.Module, str]:
    """(parent module, child key) of a dotted path; integer parts index children by position,
    negative ones from the end (e.g. "classifier.-1", "encoder.layers.-1.ln_1")."""
    parent, key, module = model, "", model
    for part in path.split("."):
        found = _child_key(module, part)
        if found is None:
            raise ZooScopeError(f"{model_name} has no layer '{path}'.")
        parent, key, module = module, found, module.get_submodule(found)
    return parent, key


def get_layer(model: nn.Module, path: str, model_name: str = "the model") -> nn.Module:
    parent, key = resolve_layer(model, path, model_name)
    return parent.get_submodule(key)


def set_layer(model: nn.Module, path: str, layer: nn.Module, model_name: str = "the model") -> None:
    parent, key = resolve_layer(model, path, model_name)
    parent._modules[key] = layer


def concrete_path(model: nn.Module, path: str, model_name: str = "the model") -> str:
    """`path` with every position replaced by the child's key ("blocks.-1" -> "blocks.6")."""
    keys, module = [], model
    for part in path.split("."):
        key = _child_key(module, part)
        if key is None:
            raise ZooScopeError(f"{model_name} has no layer '{path}'.")
        keys.append(key)
        module = module.get_submodule(key)
    return ".".join(keys)


def expand_patterns(model: nn.Module, patterns: tuple[str, ...], model_name: str = "the model") -> list[str]:
    """The table's patterns (and plain paths) as concrete module paths, in the order given."""
    return [path for pattern in patterns for path in _expand(model, pattern, model_name)]


def _expand(model: nn.Module, pattern: str, model_name: str) -> list[str]:
    if "*" not in pattern:
        return [concrete_path(model, pattern, model_name)]
    match = _PATTERN.match(pattern)
    if match is None:
        raise ZooScopeError(f"The family table's pattern '{pattern}' for {model_name} is not one it knows.")
    parent = concrete_path(model, match["parent"], model_name) if match["parent"] else ""
    prefix = f"{parent}." if parent else ""
    children = [
        f"{prefix}{key}"
        for key, child in model.get_submodule(parent).named_children()
        if not match["kind"] or type(child).__name__ == match["kind"]
    ]
    if match["runs"]:
        runs = int(match["runs"])
        ends = sorted({math.ceil(len(children) * (run + 1) / runs) - 1 for run in range(runs)})
        children = [children[end] for end in ends if end >= 0]
    return children


@dataclass(frozen=True)
class FamilyPaths:
    """One model's family facts as concrete module paths (None where the family has none)."""

    head: str | None  # the final nn.Linear classifier
    last_block: str | None  # where "last block" fine-tuning starts
    cam_target: str | None  # the layer Grad-CAM explains
    stage_ends: tuple[str, ...]  # the modules whose output ends a stage, in network order
    equal_blocks: tuple[str, ...]  # the equal blocks the network is built of, in network order


def family_paths(model: nn.Module, traits: FamilyTraits, model_name: str = "the model") -> FamilyPaths:
    """`traits` read over `model` (its family's row, its own exceptions applied); ZooScopeError
    where the table names a module the model does not have."""

    def one(path: str | None) -> str | None:
        return None if path is None else concrete_path(model, path, model_name)

    return FamilyPaths(
        head=one(traits.head),
        last_block=one(traits.last_block),
        cam_target=one(traits.cam_target),
        stage_ends=tuple(expand_patterns(model, traits.stages, model_name)),
        equal_blocks=tuple(expand_patterns(model, traits.equal_blocks, model_name)),
    )
