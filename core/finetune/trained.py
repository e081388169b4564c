"""A person's trained model: a head (and perhaps trained copies of the network's tail) on a shared backbone.

It holds no shared backbone tensors itself. To classify, `classifier(loaded)` puts it on the
shared `LoadedModel` (the torch face of the backbone's handle) as a `TrainedClassifier`: a private view of
the backbone with the trained copies in it, then the head, answering to core.classify.classifier's protocol
like any catalogue model. Where the backbone runs in ONNX Runtime (`runtime`, its handle's) and nothing of
it was trained, the features come from its verified export (core.features.backbone.frozen_features), as in
training.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from PIL import Image

from core.classify import predict as core_predict
from core.errors import ZooScopeError
from core.features.backbone import backbone_view, frozen_features
from core.features.cut import cut_at, is_cut
from core.finetune import familiarity as core_familiarity
from core.finetune.config import EpochLog, TrainConfig
from core.finetune.heads import first_linear
from core.finetune.metrics import Metrics
from core.finetune.threshold import with_threshold
from core.models.catalog import ModelSpec, spec_for_weights_id
from core.models.keys import ModelKey
from core.models.loading import LoadedModel
from core.preprocessing import Transform


class HeadOnBackbone(nn.Module):
    """Backbone view (with any trained copies in it) followed by the new head: images -> logits."""

    def __init__(self, features: nn.Module | Callable[[torch.Tensor], torch.Tensor], head: nn.Module):
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The head's inputs and its logits, from one forward (core.finetune.familiarity measures the first)."""
        features = self.features(x)
        return features, self.head(features)


@dataclass(frozen=True, eq=False)
class TrainedClassifier:
    """A trained model ready to classify (core.classify.classifier.Classifier): its own name and classes,
    the backbone's preprocessing and device."""

    name: str
    categories: Sequence[str]
    preprocess: Transform
    device: torch.device
    module: nn.Module
    familiarity: core_familiarity.Familiarity | None = None  # its training images, where it remembers them

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.module(batch.to(self.device))

    def classify_files(
        self, files: Sequence[tuple[str, bytes]], **kwargs
    ) -> list[core_predict.Classification | core_predict.Failure]:
        """core.classify.predict.classify_files with this model; where it remembers its training images, each
        classification also says how alike its photo is to them (core.finetune.familiarity)."""
        if self.familiarity is None or not isinstance(self.module, HeadOnBackbone):
            return core_predict.classify_files(self, files, **kwargs)
        return core_familiarity.classify_files(self, self.module.features_and_logits, self.familiarity, files, **kwargs)


@dataclass(eq=False)
class TrainedModel:
    """A person's model: what was trained, how, and how well."""

    backbone: str
    weights_id: str
    classes: list[str]
    config: TrainConfig
    head: nn.Module
    tuned: dict[str, nn.Module] = field(default_factory=dict)  # module path -> the trained copy that replaces it
    history: list[EpochLog] = field(default_factory=list)
    metrics: Metrics | None = None
    epochs_run: int = 0
    stopped_early: bool = False  # early stopping (patience) ended the training
    stopped_by_user: bool = False  # should_stop() ended it
    best_epoch: int = 0  # in finetune mode, 0 is the head trained alone on frozen features
    val_accuracy: float = float("nan")
    seconds: float = float("nan")  # how long the training took, everything included
    # Below this top-1 probability the answer is "not sure: low confidence" (core.finetune.threshold).
    # Training sets it from the validation results; a bundle without one gets fallback_threshold.
    threshold: float = field(kw_only=True)
    # Its training images' features, to say a photo is unlike them (core.finetune.familiarity); None for a
    # bundle made before, or a model stopped before the end of its training: the threshold alone judges.
    familiarity: core_familiarity.Familiarity | None = field(default=None, kw_only=True)
    _inference: weakref.WeakKeyDictionary = field(
        default_factory=weakref.WeakKeyDictionary, init=False, repr=False, compare=False
    )
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    @property
    def name(self) -> str:
        return f"my model ({self.backbone}, {len(self.classes)} classes)"

    @property
    def backbone_spec(self) -> ModelSpec:
        """The backbone's catalogue entry in the weights version it was trained on (its preprocessing too)."""
        spec = spec_for_weights_id(self.backbone, self.weights_id)
        if spec is None:
            raise ZooScopeError(f"This model was trained on {self.backbone} ({self.weights_id}), which this app lacks.")
        return spec

    @property
    def backbone_key(self) -> ModelKey:
        """The shared backbone to load for it: its model in the weights version it was trained on."""
        return ModelKey(self.backbone, weights=self.backbone_spec.weights_choice)

    @property
    def depth(self) -> str:
        """How much of the backbone was set to train ("head" in fast mode)."""
        return self.config.depth

    @property
    def trained_params(self) -> int:
        """Parameters of the backbone this model changed (its own copies); the head's not counted."""
        return sum(p.numel() for module in self.tuned.values() for p in module.parameters())

    @property
    def feature_dim(self) -> int:
        return first_linear(self.head).in_features

    def _check_backbone(self, loaded: LoadedModel) -> None:
        if loaded.spec.name != self.backbone or loaded.spec.weights_id != self.weights_id:
            raise ZooScopeError(
                f"This model was trained on {self.backbone} ({self.weights_id}), not on "
                f"{loaded.spec.name} ({loaded.spec.weights_id})."
            )

    def full_module(self, loaded: LoadedModel) -> nn.Module:
        """The complete model (private backbone view + trained copies + head): images -> logits, eval."""
        self._check_backbone(loaded)
        stage = self.config.features_from  # fast mode from a stage: the network cut there (no trained copies)
        features = cut_at(loaded, stage) if is_cut(stage) else backbone_view(loaded, tuned=self.tuned).module
        return HeadOnBackbone(features, self.head).eval().requires_grad_(False)

    def _inference_module(self, loaded: LoadedModel, runtime: str) -> nn.Module:
        # One per shared module and runtime, dropped when that module is (the pool unloaded it).
        with self._lock:
            built = self._inference.setdefault(loaded.module, {})
            if runtime not in built:
                built[runtime] = self._for_inference(loaded, runtime)
            return built[runtime]

    def _for_inference(self, loaded: LoadedModel, runtime: str) -> nn.Module:
        """full_module(loaded), with the frozen backbone's features from ONNX Runtime where it runs there."""
        if self.tuned or runtime == "torch" or is_cut(self.config.features_from):
            return self.full_module(loaded)
        self._check_backbone(loaded)
        features = frozen_features(loaded, backbone_view(loaded), runtime=runtime)
        return HeadOnBackbone(features, self.head).eval().requires_grad_(False)

    def classifier(self, loaded: LoadedModel, *, runtime: str = "torch") -> TrainedClassifier:
        """This model on its shared backbone, ready for core.classify.predict; `runtime` is the engine the
        backbone's handle runs in."""
        self._check_backbone(loaded)
        return TrainedClassifier(
            name=self.name,
            categories=list(self.classes),
            preprocess=loaded.preprocess,
            device=loaded.device,
            module=self._inference_module(loaded, runtime),
            familiarity=self.familiarity,
        )

    def head_inputs(self, loaded: LoadedModel, *, runtime: str = "torch") -> Callable[[torch.Tensor], torch.Tensor]:
        """What computes the head's inputs from a preprocessed batch, as this model classifies."""
        module = self._inference_module(loaded, runtime)
        if not isinstance(module, HeadOnBackbone):
            raise TypeError(f"expected the backbone then the head, not {type(module).__name__}")
        return module.features

    def predict(
        self, images: Sequence[Image.Image], loaded: LoadedModel, *, runtime: str = "torch", batch_size: int = 16
    ) -> torch.Tensor:
        """Class probabilities (N, C) for decoded images, preprocessed by the weights' own transforms."""
        model = self.classifier(loaded, runtime=runtime)
        if not images:
            return torch.empty(0, len(self.classes))
        return torch.cat(
            [
                core_predict.probabilities(model, core_predict.preprocess(model, [i.convert("RGB") for i in chunk]))
                for chunk in (images[start : start + batch_size] for start in range(0, len(images), batch_size))
            ]
        )

    def classify_files(
        self,
        loaded: LoadedModel,
        files: Sequence[tuple[str, bytes]],
        k: int = core_predict.DEFAULT_TOP_K,
        *,
        runtime: str = "torch",
        **kwargs,
    ) -> list[core_predict.Classification | core_predict.Failure]:
        """core.classify.predict.classify_files with this model: top-k over its classes, judged against its threshold
        and (where it remembers them) its training images, Failures in place."""
        results = self.classifier(loaded, runtime=runtime).classify_files(files, k=k, **kwargs)
        return with_threshold(results, self.threshold)
