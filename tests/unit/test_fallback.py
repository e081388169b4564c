"""core.models.fallback: which models run when some cannot be had, and what the note says. All offline."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from core.errors import NetworkUnavailable
from core.models import bundled, weights
from core.models.catalog import get_spec
from core.models.fallback import ModelPlan, fallback_note, note_here, plan_here, plan_models

LITE = list(bundled.NAMES)
WEB = ["resnet50", "vgg16", "efficientnet_b0"]


def only(*names: str):
    return lambda name: name in names or name in LITE


def test_with_network_the_choice_stands():
    plan = plan_models(WEB, can_download=True, is_available=only())
    assert plan == ModelPlan(tuple(WEB), tuple(WEB)) and not plan.fell_back


def test_without_network_the_bundled_models_take_the_places_in_order():
    plan = plan_models(WEB, can_download=False, is_available=only())
    assert plan.run == tuple(LITE)
    assert plan.replaced == tuple(zip(WEB, LITE, strict=True))
    assert plan.missing == WEB and plan.stand_ins == LITE


def test_models_on_this_machine_stay():
    plan = plan_models(WEB, can_download=False, is_available=only("vgg16"))
    assert plan.run == ("efficientnet_lite0", "vgg16", "efficientnet_lite1")
    assert plan.missing == ["resnet50", "efficientnet_b0"]


def test_a_stand_in_is_never_a_model_already_chosen():
    plan = plan_models(["resnet18", "efficientnet_lite0"], can_download=False, is_available=only())
    assert plan.run == ("efficientnet_lite1", "efficientnet_lite0")


def test_more_missing_models_than_stand_ins_are_left_out():
    chosen = ["resnet18", *LITE[:2], "resnet50", "vgg16"]
    plan = plan_models(chosen, can_download=False, is_available=only())
    assert plan.run == ("efficientnet_lite2", *LITE[:2])
    assert plan.replaced == (("resnet18", "efficientnet_lite2"), ("resnet50", None), ("vgg16", None))


def test_nothing_missing_means_no_fallback_even_offline():
    plan = plan_models(LITE, can_download=False, is_available=only())
    assert plan.run == tuple(LITE) and not plan.fell_back


def test_one_model_for_classify():
    assert plan_models(["resnet50"], can_download=False, is_available=only()).run == ("efficientnet_lite0",)


def test_note_says_why_what_instead_and_how_to_get_the_others(tmp_path):
    plan = plan_models(WEB, can_download=False, is_available=only())
    note = fallback_note(plan, offline_flag=False, folder=tmp_path)
    assert note.startswith("There is no network here, so `resnet50`, `vgg16` and `efficientnet_b0` cannot be")
    assert "Showing `efficientnet_lite0`, `efficientnet_lite1` and `efficientnet_lite2` in their place" in note
    for name in WEB:
        assert get_spec(name).file_name in note
    assert str(tmp_path) in note
    assert "None" not in note


def test_note_for_one_model_and_for_the_offline_setting(tmp_path):
    plan = plan_models(["resnet50"], can_download=False, is_available=only())
    note = fallback_note(plan, offline_flag=True, folder=tmp_path)
    assert note.startswith("`ZOOSCOPE_OFFLINE` is set, so `resnet50` cannot be downloaded.")
    assert "Showing `efficientnet_lite0` in its place: it comes with ZooScope and runs without network." in note
    assert "To use it without network, put `resnet50-11ad3fa6.pth`" in note


def test_note_names_models_left_out(tmp_path):
    plan = plan_models([*LITE, "resnet50"], can_download=False, is_available=only())
    note = fallback_note(plan, offline_flag=False, folder=tmp_path)
    assert "`resnet50` is left out." in note and "Showing" not in note


# --- with this machine's state --------------------------------------------------------------------


def test_plan_here_follows_the_offline_setting(monkeypatch):
    assert plan_here(WEB).run == tuple(WEB)
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    assert plan_here(WEB).run == tuple(LITE)
    assert note_here(plan_here(WEB)).startswith("`ZOOSCOPE_OFFLINE` is set")


def test_plan_here_follows_a_learned_network_failure(monkeypatch, hub_checkpoints):
    def urlopen(url, timeout):
        raise urllib.error.URLError(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    assert plan_here(WEB).run == tuple(WEB)  # not known yet: the choice stands, a download will be tried
    with pytest.raises(NetworkUnavailable):
        weights.resolve(get_spec("resnet50"))
    plan = plan_here(WEB)
    assert plan.run == tuple(LITE)
    assert str(hub_checkpoints) in note_here(plan)
    weights.forget_network_failure()
    assert plan_here(WEB).run == tuple(WEB)


def test_plan_here_keeps_a_model_whose_file_is_here(monkeypatch, hub_checkpoints: Path):
    (hub_checkpoints / get_spec("vgg16").file_name).write_bytes(b"present")  # is_available does not hash
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    assert plan_here(WEB).run == ("efficientnet_lite0", "vgg16", "efficientnet_lite1")
