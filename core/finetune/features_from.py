"""Fast mode from a stage: where the head's features come from, which stage is best, and when to say so.

`TrainConfig.features_from` names a stage end (core.features.stages); fast mode then trains its head on
that stage's pooled features, from the network cut there (core.features.cut): smaller and faster. The
feature cache keys them by backbone *and* stage, so two stages' features never mix.

"best" is chosen by the per-stage linear probes (core.features.probes) on the training images only: the
validation images that judge the trained head never choose its stage.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from core.datasets.labelled import Dataset, stratified_split
from core.features.backbone import BackboneView, frozen_features
from core.features.cut import cut_at, is_cut, stage_point
from core.features.probes import CLEAR_MARGIN  # a smaller gain is within the folds' noise
from core.features.stages import PENULTIMATE
from core.finetune.config import TrainConfig
from core.models.loading import LoadedModel
from core.progress import Progress

BEST = "best"  # the CLI's --features-from choice that runs the probes first


@dataclass(frozen=True, eq=False)
class FeatureSource:
    """Where fast mode's features come from: the penultimate layer (`frozen`, perhaps in ONNX Runtime)
    or a stage end of the network cut there."""

    loaded: LoadedModel
    frozen: BackboneView
    stage: str | None  # TrainConfig.features_from

    @property
    def dim(self) -> int:
        return stage_point(self.loaded.spec, self.stage).dim if is_cut(self.stage) else self.frozen.feature_dim

    @property
    def is_cut(self) -> bool:
        return is_cut(self.stage)

    @property
    def cache_key(self) -> str:
        """The feature cache's backbone name: one entry per weights version and per stage."""
        slug = self.loaded.spec.slug
        return f"{slug}@{self.stage}" if is_cut(self.stage) else slug

    def extractor(self, *, runtime: str, progress: Progress | None) -> Callable[[torch.Tensor], torch.Tensor]:
        if is_cut(self.stage):
            return cut_at(self.loaded, self.stage)
        return frozen_features(self.loaded, self.frozen, runtime=runtime, progress=progress)


def feature_source(loaded: LoadedModel, frozen: BackboneView, config: TrainConfig) -> FeatureSource:
    """`config`'s source of features on `loaded`; ZooScopeError (listing the choices) for an unknown stage."""
    stage = config.features_from
    if is_cut(stage):
        stage_point(loaded.spec, stage)  # checked before any work
    return FeatureSource(loaded, frozen, stage)


def best_stage(loaded: LoadedModel, dataset: Dataset, config: TrainConfig, *, progress: Progress | None = None):
    """The per-stage probes (core.features.probes.ProbeResult) on `dataset`'s training split, as train() splits it."""
    from core.features.probes import probe_backbone

    train_items, _ = stratified_split(dataset.items, val_fraction=config.val_fraction, seed=config.seed)
    return probe_backbone(loaded, train_items, batch_size=config.batch_size, progress=progress)


def resolve(loaded: LoadedModel, dataset: Dataset, config: TrainConfig, *, progress: Progress | None = None):
    """`config` with its features_from made a stage's name (BEST: the probes' best on the training split),
    and the probes' result where they ran (else None). ZooScopeError for a stage `loaded` lacks."""
    stage = config.features_from
    if stage != BEST:
        if is_cut(stage):
            stage_point(loaded.spec, stage)
        return config, None
    probes = best_stage(loaded, dataset, config, progress=progress)
    return dataclasses.replace(config, features_from=probes.best.stage), probes


@dataclass(frozen=True)
class Suggestion:
    """A stage that fits the images clearly better than the penultimate layer, by the probes."""

    stage: str
    accuracy: float
    penultimate_accuracy: float

    @property
    def text(self) -> str:
        return (
            f"{self.stage} fits your images better than the last layer: {self.accuracy:.2f} against "
            f"{self.penultimate_accuracy:.2f}. Train from it: smaller and faster."
        )


def suggestion(transfer: Mapping | None, backbone: str, *, margin: float = CLEAR_MARGIN) -> Suggestion | None:
    """From the probes' JSON ({"backbones": {B: {"stages": [...], "best": stage}}}): `backbone`'s best stage
    where it beats the penultimate layer by at least `margin`, else None."""
    entry = ((transfer or {}).get("backbones") or {}).get(backbone)
    if not entry or not entry.get("stages"):
        return None
    accuracy = {score["stage"]: float(score["accuracy"]) for score in entry["stages"]}
    best = entry.get("best")
    if best in (None, PENULTIMATE) or best not in accuracy or PENULTIMATE not in accuracy:
        return None
    if accuracy[best] - accuracy[PENULTIMATE] < margin - 1e-9:
        return None
    return Suggestion(best, accuracy[best], accuracy[PENULTIMATE])
