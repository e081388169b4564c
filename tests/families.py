"""Which catalogue models stand for their families in the tests that run one model of each."""

from __future__ import annotations

from core.models.catalog import all_specs, get_spec


def smallest_of_each_family() -> list[str]:
    """The smallest model (by parameters) of every family that has a classifier head, by name."""
    smallest: dict[str, str] = {}
    for name, spec in all_specs().items():
        if spec.traits.head is not None and (
            spec.family not in smallest or spec.num_params < get_spec(smallest[spec.family]).num_params
        ):
            smallest[spec.family] = name
    return sorted(smallest.values())
