"""How much of the network trains: the head only, the last block, the last half, or all of it.

The network is cut in two at the input of one module, `start`: the *prefix* before it stays
frozen (the shared tensors, run without autograd), the *tail* from it on trains (the person's
own copies). Where the cut may fall comes from the family table (core.models.families):

- "head": nothing of the backbone trains;
- "last": the family's `last_block` and everything that runs after it;
- "half": everything after the middle stage end (`stages`: the modules whose output ends a
  stage, in network order), so the later half of the stages, rounded up; in a network built of
  equal blocks (`equal_blocks`: ViT, Swin, ConvNeXt, MaxViT) from the block where about half of
  the parameters train, since there one long stage of blocks holds most of them;
- "all": every module.

Which modules run before or after the cut comes from one forward pass on the meta device (no
weights, no arithmetic), with a hook on every module: a module trains if it first runs at or
after `start`, and a container that holds a stage end is split into its children, so that the
tail comes as units within one stage each (the groups discriminative learning rates need), unless
it holds tensors of its own (ViT's encoder and its position embedding), which train with it whole.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn

from core import runtime
from core.errors import ZooScopeError
from core.features.backbone import block_path, head_path, strip_head
from core.models.building import build_on_meta
from core.models.catalog import ModelSpec, all_specs
from core.models.family_paths import FamilyPaths, family_paths

DEPTHS = ("head", "last", "half", "all")
DEPTH_LABELS = {
    "head": "Head only",
    "last": "Last block",
    "half": "Last half",
    "all": "Whole network",
}
# Training memory per trainable parameter: the weight, its gradient and AdamW's two moments, float32.
BYTES_PER_TRAINABLE_PARAMETER = 16
# What one person's training may hold: well inside Community Cloud's 2.7 GB beside the shared models,
# and its bundle (the weights, a quarter of this) stays under the 200 MB upload limit.
TRAINING_MEMORY_BUDGET = 768 << 20


@dataclass(frozen=True)
class Cut:
    """Where a model is cut for a depth; every path is concrete (no negative indices, no patterns)."""

    depth: str
    start: str | None  # the first module that trains (its input is the cut); None: the backbone is frozen
    tail: tuple[str, ...]  # the modules that train, each within one stage, in the order they run
    tuned: tuple[str, ...]  # those of them that hold tensors: the person's copies, what a bundle stores
    prefix: tuple[str, ...]  # the outermost frozen modules that run before `start`
    groups: tuple[tuple[str, ...], ...]  # tail modules with parameters, by stage, earliest first
    trainable_params: int

    @property
    def memory_bytes(self) -> int:
        return self.trainable_params * BYTES_PER_TRAINABLE_PARAMETER


# --- the order modules run in ---------------------------------------------------------------------


def _within(path: str, ancestor: str) -> bool:
    return path == ancestor or path.startswith(f"{ancestor}.")


@dataclass(frozen=True)
class _Run:
    """When each module first started and last finished in one forward pass (event numbers)."""

    entered: dict[str, int]
    exited: dict[str, int]
    first: str  # the first module to run
    # When each module that ran, or held one that ran (a ModuleList is never called itself), began.
    started: dict[str, int]

    def began(self, path: str) -> int:
        """When `path`, or the first of its children to run, began."""
        return self.started[path]

    def ran(self, path: str) -> bool:
        """Whether `path` or anything inside it ran."""
        return path in self.started


def _meta_run(model: nn.Module, size: int) -> _Run:
    entered: dict[str, int] = {}
    exited: dict[str, int] = {}
    clock = iter(range(1 << 62))

    def on_enter(name: str) -> None:
        if name not in entered:
            entered[name] = next(clock)

    def on_exit(name: str) -> None:
        exited[name] = next(clock)

    handles = []
    for name, module in model.named_modules():
        if name:  # hooks return None: they only watch
            handles.append(module.register_forward_pre_hook(lambda m, a, name=name: on_enter(name)))
            handles.append(module.register_forward_hook(lambda m, a, o, name=name: on_exit(name)))
    try:
        with runtime.TORCH_GLOBAL_STATE, torch.no_grad():  # a meta forward: torch.fx state is process-wide
            model(torch.empty(1, 3, size, size, device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    started: dict[str, int] = {}
    for name, event in entered.items():
        parts = name.split(".")
        for length in range(1, len(parts) + 1):
            around = ".".join(parts[:length])
            started[around] = min(event, started.get(around, event))
    return _Run(entered, exited, first=min(entered, key=entered.__getitem__), started=started)


def meta_model(spec: ModelSpec) -> nn.Module:
    """`spec`'s architecture on the meta device with its head replaced by nn.Identity(), eval."""
    model = build_on_meta(spec).to("meta")  # a few builders build for real: move those too
    strip_head(model, spec)
    return model.eval()


@functools.cache
def shapes_model(name: str) -> nn.Module:
    """One meta model per catalogue model, to find output shapes: only ever run, never hooked or changed."""
    return meta_model(all_specs()[name])


def _units(model: nn.Module, path: str, ends: tuple[str, ...], run: _Run) -> Iterator[str]:
    """`path`, or, where it holds a stage end (`ends`), its children that run (recursively). A module
    with tensors of its own (ViT's encoder: the position embedding) stays whole: they train with it."""
    module = model.get_submodule(path)
    own = (
        next(module.parameters(recurse=False), None) is not None
        or next(module.buffers(recurse=False), None) is not None
    )
    if own or not any(end.startswith(f"{path}.") for end in ends):
        yield path
        return
    for name, _ in module.named_children():
        child = f"{path}.{name}"
        if run.ran(child):
            yield from _units(model, child, ends, run)


def cut_for(name: str, depth: str) -> Cut:
    """Where `name` (a catalogue model) is cut for `depth`; ZooScopeError where it cannot be."""
    if depth not in DEPTHS:
        raise ZooScopeError(f"How much to train must be one of {', '.join(DEPTHS)}, not '{depth}'.")
    return _cut(name, depth, *_read(name))


def stage_ends(name: str) -> tuple[str, ...]:
    """The stage ends `name`'s cuts fall after and its tail is grouped by (concrete paths, in network order)."""
    return _layout(name, *_read(name)).paths.stage_ends


def _read(name: str) -> tuple[object, ...]:
    """The family-table entries the cuts read: the caches below hold one answer per model and entries."""
    found = all_specs()[name].traits
    return found.head, found.last_block, found.stages, found.equal_blocks


@dataclass(frozen=True)
class _Layout:
    """One model on the meta device (its head nn.Identity()), the family table's paths in it, the order it runs in."""

    model: nn.Module
    paths: FamilyPaths
    run: _Run


@functools.cache
def _layout(name: str, *traits: object) -> _Layout:
    """Built and run once per model (and family-table entries `traits`), for every depth; never changed."""
    spec = all_specs()[name]
    model = meta_model(spec)
    return _Layout(model, family_paths(model, spec.traits, name), _meta_run(model, spec.input_size))


@functools.cache
def _cut(name: str, depth: str, *traits: object) -> Cut:
    """cut_for, once per model, depth and the family-table entries it reads (`traits`)."""
    spec = all_specs()[name]
    head_path(spec)  # no linear head to replace: nothing to train at any depth
    if depth == "head":
        return Cut(depth, None, (), (), (), (), 0)
    if depth == "last":
        block_path(spec)  # no last block known: say so
    elif not spec.traits.stages:
        raise ZooScopeError(f"{name} can't train its {DEPTH_LABELS[depth].lower()} here: its stages are unknown.")
    layout = _layout(name, *traits)
    paths, run = layout.paths, layout.run
    if depth == "last":
        return _partition(layout, spec, depth, paths.last_block or block_path(spec))
    if depth == "all":
        return _partition(layout, spec, depth, run.first)
    if paths.equal_blocks:
        return _half_of_equal_blocks(layout, spec, _cut(name, "last", *traits), _cut(name, "all", *traits))
    ends = paths.stage_ends
    middle = ends[len(ends) // 2 - 1] if len(ends) > 1 else ends[0]
    after = run.exited[middle]
    after_middle = (path for path, event in run.entered.items() if event > after)
    return _partition(layout, spec, depth, min(after_middle, key=run.entered.__getitem__))


def _half_of_equal_blocks(layout: _Layout, spec: ModelSpec, last: Cut, whole: Cut) -> Cut:
    """ "half" in a network built of equal blocks: the cut before the block that trains closest to half of
    what the whole network does, and more than the last block. After the middle stage end nearly all
    of it would train: the stages of equal blocks are most of the network (ViT's encoder), or one of
    them holds most of its parameters (Swin's and ConvNeXt's third and fourth)."""
    cuts = [_partition(layout, spec, "half", block) for block in layout.paths.equal_blocks]
    more = [cut for cut in cuts if last.trainable_params < cut.trainable_params < whole.trainable_params]
    if not more:
        raise ZooScopeError(f"{spec.name} has no block to start its last half at between its last block and all of it.")
    return min(more, key=lambda cut: abs(2 * cut.trainable_params - whole.trainable_params))


def _partition(layout: _Layout, spec: ModelSpec, depth: str, start: str) -> Cut:
    model, run, head, ends = layout.model, layout.run, layout.paths.head, layout.paths.stage_ends
    begin = run.entered[start]
    tail: list[str] = []
    prefix: list[str] = []

    def visit(module: nn.Module, path: str) -> None:
        for name, child in module.named_children():
            child_path = f"{path}.{name}" if path else name
            if child_path == head:
                continue  # replaced by the new head
            if child_path not in run.entered:
                if run.ran(child_path):
                    visit(child, child_path)  # a ModuleList: never called itself, its children are
                continue  # modules that never run (auxiliary heads in eval) stay as they are
            if _within(start, child_path) and child_path != start or (head is not None and _within(head, child_path)):
                visit(child, child_path)  # an ancestor of the cut or of the head: look inside
            elif run.entered[child_path] >= begin:
                tail.extend(_units(model, child_path, ends, run))
            elif run.exited[child_path] < begin:
                prefix.append(child_path)
            else:
                raise ZooScopeError(f"{spec.name} can't be cut before '{start}': '{child_path}' runs on both sides.")

    visit(model, "")
    tail.sort(key=run.began)
    if not tail or not _within(tail[0], start):
        raise ZooScopeError(f"{spec.name} can't be cut before '{start}'.")
    start = tail[0]  # a container holding stage ends was split into its children: the first one is the cut
    groups: dict[int, list[str]] = {}
    params: dict[int, nn.Parameter] = {}
    tuned = []
    for path in tail:
        module = model.get_submodule(path)
        if any(True for _ in module.buffers()) or any(True for _ in module.parameters()):
            tuned.append(path)
        own = {id(p): p for p in module.parameters()}
        if not own:
            continue
        params.update(own)
        stage = sum(run.exited.get(end, -1) < run.began(path) for end in ends)
        groups.setdefault(stage, []).append(path)
    return Cut(
        depth=depth,
        start=start,
        tail=tuple(tail),
        tuned=tuple(tuned),
        prefix=tuple(prefix),
        groups=tuple(tuple(paths) for _, paths in sorted(groups.items())),
        trainable_params=sum(p.numel() for p in params.values()),
    )


def trainable_by_depth(name: str) -> dict[str, int | None]:
    """The parameters each depth would train for `name` (None where it cannot be cut): no weights needed."""
    counts: dict[str, int | None] = {}
    for depth in DEPTHS:
        try:
            counts[depth] = cut_for(name, depth).trainable_params
        except ZooScopeError:
            counts[depth] = None
    return counts


def trained_paths(name: str, depth: str) -> tuple[str, ...]:
    """The modules of `name` that training to `depth` makes copies of (what a bundle stores)."""
    return cut_for(name, depth).tuned


def check_memory(name: str, cut: Cut) -> None:
    """ZooScopeError when training `cut` would take more memory than one person may use."""
    if cut.memory_bytes > TRAINING_MEMORY_BUDGET:
        raise ZooScopeError(
            f"Training {name}'s {DEPTH_LABELS[cut.depth].lower()} ({cut.trainable_params / 1e6:.0f} M parameters) "
            f"needs about {cut.memory_bytes / 2**20:,.0f} MB for its weights, gradients and optimiser state, over "
            f"the {TRAINING_MEMORY_BUDGET / 2**20:,.0f} MB this app allows: train less of it, or a smaller backbone."
        )
