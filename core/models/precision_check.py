"""Measuring whether bf16 autocast keeps a model's answers: the number behind `ZOOSCOPE_PRECISION=auto`.

core.runtime makes the decision; this module measures what it decides on, once per process and
device type, on the offline model (real ImageNet weights, always on disk) and the check set.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn as nn
from PIL import Image

from core import runtime
from core.datasets.check_images import check_images
from core.models import weights
from core.models.building import build_model, read_state_dict
from core.models.catalog import OFFLINE_DEFAULT, get_spec
from core.preprocessing import Transform, model_batch

_log = logging.getLogger(__name__)

BATCH_SIZE = 16


class Reference(NamedTuple):
    """What the check needs of a model: its module, its preprocessing and where it runs."""

    module: nn.Module
    preprocess: Transform
    device: torch.device


def bf16_agreement(model: Reference, images: Sequence[Image.Image], *, batch_size: int = BATCH_SIZE) -> float:
    """The share of `images` whose top-1 class under bf16 autocast equals the fp32 top-1, on the
    model's own device (CPU autocast on the CPU), whatever precision the model was loaded with.

    `model` is anything with `module`, `preprocess` and `device` (a core.models.loading.LoadedModel too).
    """
    if not images:
        raise ValueError("the bf16 check needs at least one image")
    device = torch.device(model.device)
    same = 0
    for start in range(0, len(images), batch_size):
        x = model_batch(images[start : start + batch_size], model.preprocess).to(device)
        with torch.inference_mode():
            fp32 = model.module(x).argmax(dim=1)
            with runtime.autocast(device, "bf16"):
                bf16 = model.module(x).argmax(dim=1)
        same += int((fp32 == bf16).sum())
    return same / len(images)


def _reference(device: torch.device) -> Reference:
    spec = get_spec(OFFLINE_DEFAULT)
    module = build_model(spec, read_state_dict(weights.resolve(spec))).to(device)
    return Reference(module, spec.transforms(), device)


_lock = threading.Lock()
_cache: dict[str, float] = {}


def bf16_check(device: torch.device | str) -> float:
    """Top-1 agreement between fp32 and bf16 autocast for the offline model on `device`: run once
    per process and device type, then cached (about a second on a GPU). 0.0 if it cannot run."""
    device = torch.device(device)
    with _lock:
        if device.type not in _cache:
            try:
                value = bf16_agreement(_reference(device), check_images())
            except Exception as error:  # a check that cannot run must never stop a model loading
                _log.warning("the bf16 check could not run (%s); models stay in fp32", error)
                value = 0.0
            _log.info("bf16 autocast agrees with fp32 on %.1f%% of the check's images", value * 100)
            _cache[device.type] = value
        return _cache[device.type]
