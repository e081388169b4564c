"""Which models a page runs when some of the chosen ones cannot be had: their weights are not on
this machine and cannot be downloaded now (no network, or ZOOSCOPE_OFFLINE).

Each such model gives its place to the next bundled model (core.models.bundled: real ImageNet weights
that come with the app) not already chosen, so a comparison of three stays a comparison of
three. Pure decisions: the page only renders them.

A choice is whatever the page's widget holds: a model's name, or a ModelKey (core.models.keys: a model in
a named engine, "resnet50 · int8", which needs resnet50's weights); a stand-in comes in the same form.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.models import bundled, weights
from core.models.catalog import ModelSpec, get_spec
from core.models.keys import ModelKey

Choice = str | ModelKey  # as the page's widget holds it


@dataclass(frozen=True)
class ModelPlan:
    chosen: tuple[Choice, ...]
    run: tuple[Choice, ...]  # what runs, in the chosen order
    # (chosen model, the bundled model in its place, or None when every bundled model is already chosen)
    replaced: tuple[tuple[Choice, Choice | None], ...] = ()

    @property
    def fell_back(self) -> bool:
        return bool(self.replaced)

    @property
    def missing(self) -> list[Choice]:
        return [name for name, _ in self.replaced]

    @property
    def stand_ins(self) -> list[Choice]:
        return [stand_in for _, stand_in in self.replaced if stand_in is not None]


def plan_models(
    chosen: Sequence[Choice],
    *,
    can_download: bool,
    is_available: Callable[[Choice], bool],
    stand_ins: Sequence[Choice] = bundled.NAMES,
) -> ModelPlan:
    """`chosen` as it is when downloads work or nothing is missing; else each missing model replaced."""
    chosen = tuple(chosen)
    if can_download:
        return ModelPlan(chosen, chosen)
    spare = [name for name in stand_ins if name not in chosen]
    run: list[Choice] = []
    replaced: list[tuple[Choice, Choice | None]] = []
    for name in chosen:
        if is_available(name):
            run.append(name)
            continue
        stand_in = spare.pop(0) if spare else None
        replaced.append((name, stand_in))
        if stand_in is not None:
            run.append(stand_in)
    return ModelPlan(chosen, tuple(run), tuple(replaced))


def _spec(choice: Choice) -> ModelSpec:
    """The catalogue entry behind a choice (ModelKey("resnet50", "int8") needs resnet50's weights)."""
    return get_spec(choice.name, choice.weights) if isinstance(choice, ModelKey) else get_spec(choice)


def plan_here(chosen: Sequence[Choice]) -> ModelPlan:
    """`plan_models` with this machine's state: the weights on disk, ZOOSCOPE_OFFLINE, the network; stand-ins
    in the form the choices have (names, or ModelKeys)."""
    keys = any(isinstance(choice, ModelKey) for choice in chosen)
    return plan_models(
        chosen,
        can_download=weights.can_download(),
        is_available=lambda choice: weights.is_available(_spec(choice)),
        stand_ins=[ModelKey(name) for name in bundled.NAMES] if keys else bundled.NAMES,
    )


def _names(names: Sequence[Choice]) -> str:
    quoted = [f"`{name}`" for name in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def fallback_note(plan: ModelPlan, *, offline_flag: bool, folder: Path) -> str:
    """What a person reads about `plan` (Markdown): why, what runs instead, how to get the others here."""
    missing, stand_ins = plan.missing, plan.stand_ins
    why = f"`{weights.OFFLINE_ENV}` is set" if offline_flag else "There is no network here"
    parts = [f"{why}, so {_names(missing)} cannot be downloaded."]
    if stand_ins:
        one = len(stand_ins) == 1
        parts.append(
            f"Showing {_names(stand_ins)} in {'its' if one else 'their'} place: "
            f"{'it comes' if one else 'they come'} with ZooScope and {'runs' if one else 'run'} without network."
        )
    if left_out := [name for name, stand_in in plan.replaced if stand_in is None]:
        parts.append(f"{_names(left_out)} {'is' if len(left_out) == 1 else 'are'} left out.")
    files = _names(list(dict.fromkeys(_spec(name).file_name for name in missing)))
    parts.append(f"To use {'it' if len(missing) == 1 else 'them'} without network, put {files} in `{folder}`.")
    return " ".join(parts)


def note_here(plan: ModelPlan) -> str:
    """`fallback_note` with this machine's state: ZOOSCOPE_OFFLINE, and the folder weights files go in."""
    folder = weights.local_weights_dir() or weights.hub_checkpoints_dir()
    return fallback_note(plan, offline_flag=weights.offline(), folder=folder)
