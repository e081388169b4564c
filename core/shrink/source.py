"""What is being shrunk, and the images it is judged on.

A source is one complete network, images -> logits, on a private copy: a catalogue model with its
ImageNet classes, or a person's fine-tuned model (a bundle) with its own. Its images say how each
variant is recovered, calibrated and judged, and the two kinds differ:

- a fine-tuned model has labels: recovery fine-tunes on the training split, int8 calibrates on it,
  and fidelity is accuracy on the validation split (the split Fine-tune made, from its own seed);
- a catalogue model has none that matter here: recovery distils from the unpruned model on the
  person's unlabelled photos (or the example photos' calibration variations), int8 calibrates on
  the same photos, and fidelity is top-1 agreement with the fp32 original on held-out photos,
  never the ones it was calibrated or distilled on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch.nn as nn
from PIL import Image

from core.datasets.check_images import calibration_images, check_images
from core.datasets.labelled import Dataset, stratified_split
from core.errors import ZooScopeError
from core.finetune.augment import training_image
from core.finetune.trained import TrainedModel
from core.models.catalog import ModelSpec
from core.models.loading import LoadedModel
from core.preprocessing import Transform

MAX_CALIBRATION = 64  # images int8's ranges are measured on (each is one calibration batch)
MAX_HOLDOUT = 200  # images each variant is judged on


class ShrinkInputError(ZooScopeError):
    """The images given cannot do what Shrink needs of them (the message says what)."""


@dataclass(frozen=True)
class ShrinkSource:
    """One network to shrink: images -> logits, eval, frozen, a copy of its own."""

    name: str
    kind: str  # "catalogue" or "bundle"
    spec: ModelSpec  # the architecture's entry (a bundle's backbone)
    module: nn.Module
    classes: list[str]
    preprocess: Transform

    @property
    def fidelity_kind(self) -> str:
        """What a variant's fidelity is: "accuracy" (labels known) or "agreement" (with the fp32 original)."""
        return "accuracy" if self.kind == "bundle" else "agreement"


def catalogue_source(loaded: LoadedModel) -> ShrinkSource:
    """A catalogue model as loaded (its own weights; pruning and recovery work on copies)."""
    return ShrinkSource(
        name=loaded.spec.name,
        kind="catalogue",
        spec=loaded.spec,
        module=loaded.module,
        classes=list(loaded.spec.categories),
        preprocess=loaded.preprocess,
    )


def bundle_source(trained: TrainedModel, loaded: LoadedModel) -> ShrinkSource:
    """A person's fine-tuned model on its backbone `loaded`: the whole network, head included."""
    return ShrinkSource(
        name=trained.name,
        kind="bundle",
        spec=loaded.spec,
        module=trained.full_module(loaded),
        classes=list(trained.classes),
        preprocess=loaded.preprocess,
    )


@dataclass(frozen=True)
class ShrinkImages:
    """The images of one shrink: what recovery trains on, what int8 calibrates on, what judges."""

    train: list[Image.Image]  # recovery: labelled (fine-tune) or unlabelled (distillation)
    train_labels: list[int] | None
    calibration: list[Image.Image]
    holdout: list[Image.Image]
    holdout_labels: list[int] | None  # accuracy where known, else agreement with the original
    description: str  # for a person: "your 40 training / 10 validation images"


def images_for_bundle(trained: TrainedModel, dataset: Dataset, spec: ModelSpec) -> ShrinkImages:
    """The dataset `trained` was trained on, split as Fine-tune split it (same fraction and seed)."""
    if list(dataset.classes) != list(trained.classes):
        raise ShrinkInputError(
            f"These images' classes ({', '.join(dataset.classes)}) are not the model's ({', '.join(trained.classes)})."
        )
    config = trained.config
    train_items, val_items = stratified_split(dataset.items, val_fraction=config.val_fraction, seed=config.seed)
    if not train_items or not val_items:
        raise ShrinkInputError("Shrink needs at least two images of a class: one to train on, one to check on.")
    index = {name: position for position, name in enumerate(trained.classes)}
    train = [training_image(item, spec) for item in train_items]
    holdout = [training_image(item, spec) for item in val_items[:MAX_HOLDOUT]]
    return ShrinkImages(
        train=train,
        train_labels=[index[item.label] for item in train_items],
        calibration=train[:MAX_CALIBRATION],
        holdout=holdout,
        holdout_labels=[index[item.label] for item in val_items[:MAX_HOLDOUT]],
        description=f"your {len(train)} training / {len(holdout)} validation images",
    )


def _digest(image: Image.Image) -> str:
    return hashlib.blake2b(image.tobytes(), digest_size=16, person=image.mode.encode()[:16]).hexdigest()


def images_for_catalogue(photos: Sequence[Image.Image] = (), holdout: Sequence[Image.Image] = ()) -> ShrinkImages:
    """The person's unlabelled `photos` (distillation and calibration) and `holdout` photos (judging);
    each falls back to the example photos' variations, which differ between the two sets."""
    train = list(photos) or calibration_images()
    judged = list(holdout)[:MAX_HOLDOUT] or check_images()
    shared = {_digest(image) for image in judged} & {_digest(image) for image in train}
    if shared:
        raise ShrinkInputError(
            f"{len(shared)} of the held-out photos are also among the photos it is calibrated on: "
            "agreement on them would flatter the variants. Give different photos."
        )
    where_train = f"your {len(train)} photos" if photos else f"{len(train)} variations of the example photos"
    where_held = f"your {len(judged)} held-out photos" if holdout else f"{len(judged)} other example variations"
    return ShrinkImages(
        train=train,
        train_labels=None,
        calibration=train[:MAX_CALIBRATION],
        holdout=judged,
        holdout_labels=None,
        description=f"distilled and calibrated on {where_train}; judged on {where_held}",
    )
