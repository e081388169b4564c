"""The offline fallback on a page: the models that run here take the place of chosen ones that need
a download that cannot happen now, one note says so, and one click goes back.

The model widget itself is switched (so it shows what runs); the person's own choice is kept
for "Try the network again", which forgets the network failure and puts that choice back.
core.models.fallback decides what runs; this module only keeps it in the session and draws it.

A page calls `prepare` before drawing its model widget (a widget's value can only be set before
it is drawn), `show_note` after it, and `fall_back` whenever the models might need the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import streamlit as st

from core.models import fallback, weights
from core.models.fallback import Choice


@dataclass(frozen=True)
class Fallback:
    # Choices are what the widget holds: model names, or ModelKeys (Compare: a model and its int8 variant).
    before: list[Choice] | Choice  # the widget's value as the person (or the page's default) chose it
    after: list[Choice] | Choice  # the value put in its place: the models that run here
    note: str
    retry: bool  # False under ZOOSCOPE_OFFLINE: the setting, not the network, keeps this offline


def _slot(widget_key: str) -> str:
    return f"{widget_key}_fallback"


def _pending(widget_key: str) -> str:
    return f"{widget_key}_fallback_pending"


def prepare(widget_key: str) -> None:
    """Before the widget is drawn: put in it the models that `fall_back` chose in the run before."""
    if _pending(widget_key) in st.session_state:
        st.session_state[widget_key] = st.session_state.pop(_pending(widget_key))


def _value(names: Sequence[Choice], single: bool) -> list[Choice] | Choice:
    return names[0] if single else list(names)


def default_choice(widget_key: str, default: Sequence[Choice]) -> list[Choice] | None:
    """A multiselect's default: `default`, or the models that run here in its place when the network is
    known to be out (noted, with the way back; silently under ZOOSCOPE_OFFLINE, which asks for offline).
    None once the widget has a value in this session (a default given then would be ignored anyway).
    """
    if widget_key in st.session_state:
        return None
    plan = fallback.plan_here(default)
    if plan.fell_back and plan.run and not weights.offline():
        st.session_state[_slot(widget_key)] = Fallback(
            before=list(default), after=list(plan.run), note=fallback.note_here(plan), retry=True
        )
    return list(plan.run) if plan.run else list(default)


def fall_back(widget_key: str, chosen: Sequence[Choice], *, single: bool = False) -> None:
    """If some of `chosen` cannot be had now, rerun the page with the models that run here in the widget.

    Returns (and changes nothing) when everything chosen can be had, or when nothing could take its place.
    """
    plan = fallback.plan_here(chosen)
    if not plan.fell_back or not plan.run:
        return
    st.session_state[_slot(widget_key)] = Fallback(
        before=_value(chosen, single),
        after=_value(plan.run, single),
        note=fallback.note_here(plan),
        retry=not weights.offline(),
    )
    st.session_state[_pending(widget_key)] = _value(plan.run, single)
    st.rerun()


def _try_again(widget_key: str) -> None:
    note = st.session_state.pop(_slot(widget_key), None)
    weights.forget_network_failure()
    if note is not None:
        st.session_state[widget_key] = note.before


def show_note(widget_key: str) -> None:
    """The one note about this widget's fallback, with "Try the network again", while the widget still
    holds the models put in place (a choice the person makes afterwards ends it)."""
    note = st.session_state.get(_slot(widget_key))
    if note is None:
        return
    if st.session_state.get(widget_key) != note.after:
        del st.session_state[_slot(widget_key)]
        return
    st.info(note.note, icon=":material/cloud_off:")
    if note.retry:
        st.button(
            "Try the network again",
            key=f"{widget_key}_retry",
            on_click=_try_again,
            args=(widget_key,),
            icon=":material/refresh:",
            help="Forget that the network was out and go back to your choice; if there is still no network, "
            "the models that run here take its place again.",
        )
