"""Transfer learning on a shared, read-only backbone: a new head (and optionally a copy of the last block).

The cached ImageNet model is shared by every browser session, and other threads run forwards on
it while a person trains. So training never touches `LoadedModel.module`: it builds a private
*view* of it (the same architecture built on the meta device, the shared tensors assigned into
it, nothing copied), replaces the classifier in the view with `nn.Identity()` so the view returns
features, and trains only modules that belong to this person:

- "fast" mode: the backbone is frozen, so every image's features are computed once (and kept in
  a `FeatureCache` across trainings) and the head trains for many epochs on those vectors;
- "finetune" mode: the last block is deep-copied into the view (its tensors are the person's
  own) and trains with the head on lightly augmented images; the rest stays frozen. The whole
  view stays in eval mode: batch-norm statistics are not updated (small data sets would ruin
  them), only weights move.

Everything is deterministic for a seed: the head's initialisation, shuffling and dropout use a
private `torch.Generator`; augmentation (which torchvision draws from the global generator) runs
under a lock with the global generator forked and seeded per batch.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torchvision.models import Weights
from torchvision.transforms import v2

from core import predict as core_predict
from core.catalog import ModelSpec
from core.errors import ImageError, ZooScopeError
from core.finetune.data import Dataset, LabelledImage, stratified_split
from core.images import decode_image
from core.loading import LoadedModel
from core.preprocessing import decode_side, model_batch
from core.views import get_layer, private_view, set_layer

# --- where the classifier and the last block live, per family ------------------------------------
# Dotted paths; integer parts index a module's children by position, negative ones from the end
# (e.g. "classifier.-1" is the last module of a Sequential). HEADS point at the final nn.Linear.

HEADS: dict[str, str] = {
    "resnet": "fc",
    "vgg": "classifier.-1",
    "alexnet": "classifier.-1",
    "efficientnet": "classifier.-1",
    "efficientnet_lite": "classifier",
    "mobilenet_v2": "classifier.-1",
    "mobilenet_v3": "classifier.-1",
    "convnext": "classifier.-1",
    "vit": "heads.head",
    "swin": "head",
    "maxvit": "classifier.-1",
    "densenet": "classifier",
    "regnet": "fc",
    "googlenet": "fc",
    "inception": "fc",
    "shufflenet_v2": "fc",
    "mnasnet": "classifier.-1",
}

LAST_BLOCKS: dict[str, str] = {
    "resnet": "layer4",
    "vgg": "features.-3",  # the last conv (then ReLU, MaxPool)
    "alexnet": "features.-3",
    "efficientnet": "features.-2",  # features[-1] is the final 1x1 conv
    "efficientnet_lite": "blocks.-1",
    "mobilenet_v2": "features.-2",
    "mobilenet_v3": "features.-2",
    "convnext": "features.-1",
    "vit": "encoder.layers.-1",
    "swin": "features.-1",
    "maxvit": "blocks.-1",
    "densenet": "features.denseblock4",
    "regnet": "trunk_output.block4",
    "googlenet": "inception5b",
    "inception": "Mixed_7c",
    "shufflenet_v2": "stage4",
    "mnasnet": "layers.-4",  # then the final 1x1 conv, BN, ReLU
}

# VGG with batch norm: the last conv is followed by BN, ReLU, MaxPool.
_BLOCK_BY_MODEL: dict[str, str] = {f"vgg{depth}_bn": "features.-4" for depth in (11, 13, 16, 19)}

MODES = ("fast", "finetune")
HEAD_TYPES = ("linear", "mlp")
DEFAULT_CACHE_ENTRIES = 10_000  # 50 MB of 1280-d float32 features

Progress = Callable[[int, int, str], None]


def head_path(spec: ModelSpec) -> str:
    """Where `spec`'s final Linear classifier lives, or ZooScopeError if it has no such head."""
    try:
        return HEADS[spec.family]
    except KeyError:
        raise ZooScopeError(
            f"{spec.name} can't be fine-tuned here: {spec.family} models have no linear classifier to replace."
        ) from None


def block_path(spec: ModelSpec) -> str:
    """Where `spec`'s last block lives (the part "finetune" mode trains), or ZooScopeError."""
    head_path(spec)
    try:
        return _BLOCK_BY_MODEL.get(spec.name) or LAST_BLOCKS[spec.family]
    except KeyError:
        raise ZooScopeError(
            f"{spec.name} can't be fine-tuned here: its last block is unknown; use the fast mode instead."
        ) from None


def strip_head(model: nn.Module, spec: ModelSpec) -> int:
    """Replace `model`'s final Linear with nn.Identity() in place; returns its in_features (D)."""
    path = head_path(spec)
    head = get_layer(model, path, spec.name)
    if not isinstance(head, nn.Linear):
        raise ZooScopeError(f"{spec.name} can't be fine-tuned here: '{path}' is not a linear classifier.")
    set_layer(model, path, nn.Identity(), spec.name)
    return head.in_features


# --- the private view -----------------------------------------------------------------------------


@dataclass(eq=False)
class BackboneView:
    """A person's own feature extractor over the shared tensors.

    `module` maps a preprocessed batch (N, 3, S, S) to features (N, feature_dim). In finetune mode
    `block` is the deep-copied last block (already placed in `module` at `block_path`), the only
    part with requires_grad=True.
    """

    name: str
    module: nn.Module
    feature_dim: int
    block: nn.Module | None = None
    block_path: str | None = None


def backbone_view(loaded: LoadedModel, *, finetune: bool = False, block: nn.Module | None = None) -> BackboneView:
    """A private feature extractor for `loaded`; with finetune=True, its last block is a trainable copy.

    `block` (a trained copy from an earlier run or a bundle) is placed at the last-block path instead.
    """
    spec = loaded.spec
    path = block_path(spec) if (finetune or block is not None) else None
    view = private_view(loaded)
    feature_dim = strip_head(view, spec)
    if path is not None:
        if block is None:
            block = copy.deepcopy(get_layer(view, path, spec.name))  # the person's own tensors
            block.requires_grad_(finetune)
        set_layer(view, path, block, spec.name)
        view.eval()
    return BackboneView(name=spec.name, module=view, feature_dim=feature_dim, block=block, block_path=path)


# --- features -------------------------------------------------------------------------------------


class FeatureCache:
    """(backbone name, image digest) -> 1-D feature tensor, least recently used entries dropped first.

    Thread-safe; shared across trainings (and sessions) so that a second training on the same
    images, or the same images with other settings, costs no forward pass.
    """

    def __init__(self, max_entries: int = DEFAULT_CACHE_ENTRIES):
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, not {max_entries}")
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[str, str], torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, backbone: str, digest: str) -> torch.Tensor | None:
        key = (backbone, digest)
        with self._lock:
            tensor = self._entries.get(key)
            if tensor is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return tensor

    def put(self, backbone: str, digest: str, features: torch.Tensor) -> None:
        key = (backbone, digest)
        value = features.detach().to("cpu", copy=True).contiguous()
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, key: tuple[str, str]) -> bool:
        with self._lock:
            return key in self._entries


def _decode(item: LabelledImage, min_side: int | None = None) -> Image.Image:
    try:
        return decode_image(item.data, min_side=min_side)
    except ImageError as error:
        raise ImageError(f"{item.name}: {error}") from None


def _backbone_forward(module: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """One frozen forward (the only place fast mode runs the backbone; tests count calls here)."""
    with torch.inference_mode():
        return module(batch).float()


def extract_features(
    backbone_view: nn.Module,
    preprocess: Callable[[Image.Image], torch.Tensor],
    items: Sequence[LabelledImage],
    *,
    backbone: str | None = None,
    batch_size: int = 32,
    cache: FeatureCache | None = None,
    progress: Progress | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Features (N, D) of `items`, in order, on the CPU. Only images missing from `cache` run forward.

    `backbone` names the backbone for the cache keys (required with a cache).
    """
    if cache is not None and not backbone:
        raise ValueError("extract_features needs the backbone name to use a feature cache")
    found: dict[int, torch.Tensor] = {}
    if cache is not None:
        for index, item in enumerate(items):
            if (tensor := cache.get(backbone, item.digest)) is not None:
                found[index] = tensor
    missing = [index for index in range(len(items)) if index not in found]
    total = len(items)
    done = len(found)
    if progress:
        progress(done, total, f"Extracting features: {done} of {total} images")
    side = decode_side([preprocess])
    for start in range(0, len(missing), batch_size):
        chunk = missing[start : start + batch_size]
        # The same preprocessing as Classify and Compare (core.preprocessing), so the head is
        # trained on exactly the features it will see in use.
        batch = model_batch([_decode(items[index], side) for index in chunk], preprocess).to(device)
        features = _backbone_forward(backbone_view, batch).cpu()
        for index, row in zip(chunk, features, strict=True):
            found[index] = row
            if cache is not None:
                cache.put(backbone, items[index].digest, row)
        done += len(chunk)
        if progress:
            progress(done, total, f"Extracting features: {done} of {total} images")
    if not items:
        return torch.empty(0, 0)
    return torch.stack([found[index] for index in range(len(items))])


# --- heads ----------------------------------------------------------------------------------------


class SeededDropout(nn.Dropout):
    """nn.Dropout drawing its masks from a private generator (None: the global one, as nn.Dropout)."""

    def __init__(self, p: float, generator: torch.Generator | None = None):
        super().__init__(p)
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or self.generator is None:
            return super().forward(x)
        keep = torch.empty(x.shape, device="cpu").bernoulli_(1.0 - self.p, generator=self.generator).to(x.device)
        return x * keep / (1.0 - self.p)


def _init_linear(layer: nn.Linear, generator: torch.Generator | None) -> nn.Linear:
    # nn.Linear's own initialisation, drawn from `generator`.
    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
    bound = 1 / math.sqrt(layer.in_features)
    nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
    return layer


def build_head(
    kind: str,
    in_features: int,
    num_classes: int,
    *,
    hidden: int = 256,
    dropout: float = 0.2,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """A new head: "linear" is Linear(D, C); "mlp" is Linear(D, hidden)-ReLU-Dropout-Linear(hidden, C)."""
    if kind == "linear":
        return _init_linear(nn.Linear(in_features, num_classes), generator)
    if kind == "mlp":
        return nn.Sequential(
            _init_linear(nn.Linear(in_features, hidden), generator),
            nn.ReLU(),
            SeededDropout(dropout, generator),
            _init_linear(nn.Linear(hidden, num_classes), generator),
        )
    raise ZooScopeError(f"Unknown head type '{kind}'; choose one of {', '.join(HEAD_TYPES)}.")


# --- configuration and logs ----------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    mode: str = "fast"  # "fast": frozen backbone, cached features; "finetune": also the last block
    head: str = "linear"  # "linear" or "mlp"
    epochs: int = 30
    lr: float = 1e-3  # the head's learning rate (AdamW)
    block_lr: float = 1e-4  # the copied last block's learning rate (finetune mode)
    batch_size: int = 32
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    patience: int = 5  # epochs without a lower validation loss before stopping
    val_fraction: float = 0.2
    seed: int = 0
    hidden: int = 256  # mlp head only
    dropout: float = 0.2  # mlp head only

    def __post_init__(self) -> None:
        problems = []
        if self.mode not in MODES:
            problems.append(f"mode must be one of {', '.join(MODES)}, not '{self.mode}'")
        if self.head not in HEAD_TYPES:
            problems.append(f"head must be one of {', '.join(HEAD_TYPES)}, not '{self.head}'")
        for name in ("epochs", "batch_size", "patience", "hidden"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                problems.append(f"{name} must be a whole number of at least 1")
        for name in ("lr", "block_lr"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be positive")
        if not self.weight_decay >= 0:
            problems.append("weight_decay must not be negative")
        for name in ("label_smoothing", "dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                problems.append(f"{name} must be at least 0 and below 1")
        if not 0.0 < self.val_fraction < 1.0:
            problems.append("val_fraction must be between 0 and 1")
        if problems:
            raise ZooScopeError("Invalid training settings: " + "; ".join(problems) + ".")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class EpochLog:
    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    seconds: float


# --- metrics --------------------------------------------------------------------------------------


class Mistake(NamedTuple):
    item: LabelledImage
    true: str
    predicted: str
    confidence: float  # the probability given to `predicted`


@dataclass(frozen=True, eq=False)
class Metrics:
    """Validation results of a trained model."""

    accuracy: float
    per_class: pd.DataFrame  # class, precision, recall, f1, support
    confusion: pd.DataFrame  # long form: true, predicted, count (every pair, zeros included)
    mistakes: list[Mistake]  # most confident first

    def per_class_frame(self) -> pd.DataFrame:
        return self.per_class.copy()

    def confusion_frame(self) -> pd.DataFrame:
        return self.confusion.copy()

    @property
    def macro_f1(self) -> float:
        return float(self.per_class["f1"].mean()) if len(self.per_class) else float("nan")


def _safe_ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    return torch.where(denominator > 0, numerator / denominator.clamp(min=1), torch.zeros_like(numerator))


def evaluate(
    probabilities: torch.Tensor,
    targets: torch.Tensor,
    classes: Sequence[str],
    val_items: Sequence[LabelledImage],
) -> Metrics:
    """Accuracy, per-class precision/recall/F1/support, confusion counts and mistakes.

    A class never predicted has precision 0; a class absent from the targets has recall 0 and
    support 0 (the usual zero-division convention).
    """
    num_classes = len(classes)
    targets = targets.long().cpu()
    confidence, predicted = probabilities.float().cpu().max(dim=1)
    counts = torch.bincount(targets * num_classes + predicted, minlength=num_classes * num_classes)
    matrix = counts.reshape(num_classes, num_classes).double()  # [true, predicted]
    correct = matrix.diagonal()
    support = matrix.sum(dim=1)
    predicted_totals = matrix.sum(dim=0)
    precision = _safe_ratio(correct, predicted_totals)
    recall = _safe_ratio(correct, support)
    f1 = _safe_ratio(2 * precision * recall, precision + recall)
    total = len(targets)
    per_class = pd.DataFrame(
        {
            "class": list(classes),
            "precision": precision.tolist(),
            "recall": recall.tolist(),
            "f1": f1.tolist(),
            "support": support.long().tolist(),
        }
    )
    confusion = pd.DataFrame(
        [
            {"true": classes[t], "predicted": classes[p], "count": int(matrix[t, p])}
            for t in range(num_classes)
            for p in range(num_classes)
        ],
        columns=["true", "predicted", "count"],
    )
    wrong = (predicted != targets).nonzero().flatten().tolist()
    mistakes = sorted(
        (
            Mistake(val_items[i], classes[int(targets[i])], classes[int(predicted[i])], float(confidence[i]))
            for i in wrong
        ),
        key=lambda mistake: -mistake.confidence,
    )
    return Metrics(
        accuracy=float(correct.sum() / total) if total else float("nan"),
        per_class=per_class,
        confusion=confusion,
        mistakes=mistakes,
    )


# --- the trained model ----------------------------------------------------------------------------


class _Classifier(nn.Module):
    """Backbone view (with any trained block in it) followed by the new head: images -> logits."""

    def __init__(self, features: nn.Module, head: nn.Module):
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass(eq=False)
class TrainedModel:
    """A person's model: a head (and perhaps a trained copy of the last block) on a shared backbone.

    It holds no backbone tensors itself; `predict`, `classify_files` and `full_module` take the
    shared `LoadedModel` and build a private view over it.
    """

    backbone: str
    weights_id: str
    classes: list[str]
    config: TrainConfig
    head: nn.Module
    block: nn.Module | None = None
    block_path: str | None = None
    history: list[EpochLog] = field(default_factory=list)
    metrics: Metrics | None = None
    epochs_run: int = 0
    stopped_early: bool = False  # early stopping (patience) ended the training
    stopped_by_user: bool = False  # should_stop() ended it
    best_epoch: int = 0
    val_accuracy: float = float("nan")
    _inference: weakref.WeakKeyDictionary = field(
        default_factory=weakref.WeakKeyDictionary, init=False, repr=False, compare=False
    )
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    @property
    def name(self) -> str:
        return f"my model ({self.backbone}, {len(self.classes)} classes)"

    @property
    def feature_dim(self) -> int:
        first = self.head if isinstance(self.head, nn.Linear) else self.head[0]
        return first.in_features

    def _check_backbone(self, loaded: LoadedModel) -> None:
        if loaded.name != self.backbone or loaded.spec.weights_id != self.weights_id:
            raise ZooScopeError(
                f"This model was trained on {self.backbone} ({self.weights_id}), not on "
                f"{loaded.name} ({loaded.spec.weights_id})."
            )

    def full_module(self, loaded: LoadedModel) -> nn.Module:
        """The complete model (private backbone view + trained block + head): images -> logits, eval."""
        self._check_backbone(loaded)
        view = backbone_view(loaded, block=self.block)
        return _Classifier(view.module, self.head).eval().requires_grad_(False)

    def _inference_module(self, loaded: LoadedModel) -> nn.Module:
        # One per shared module, dropped when that module is (the pool unloaded it).
        with self._lock:
            module = self._inference.get(loaded.module)
            if module is None:
                module = self._inference[loaded.module] = self.full_module(loaded)
            return module

    def as_loaded(self, loaded: LoadedModel) -> LoadedModel:
        """This model in LoadedModel's shape (own name and classes), for core.predict and core.compare."""
        self._check_backbone(loaded)
        spec = loaded.spec
        weights = Weights(
            url=spec.weights.url,
            transforms=spec.weights.transforms,
            meta={"categories": list(self.classes), "min_size": spec.meta.get("min_size"), "_docs": self.name},
        )
        return LoadedModel(
            spec=dataclasses.replace(spec, name=self.name, weights=weights),
            module=self._inference_module(loaded),
            preprocess=loaded.preprocess,
            device=loaded.device,
        )

    def predict(self, images: Sequence[Image.Image], loaded: LoadedModel, *, batch_size: int = 16) -> torch.Tensor:
        """Class probabilities (N, C) for decoded images, preprocessed by the weights' own transforms."""
        model = self.as_loaded(loaded)
        if not images:
            return torch.empty(0, len(self.classes))
        return torch.cat(
            [
                core_predict.probabilities(model, core_predict.preprocess(model, [i.convert("RGB") for i in chunk]))
                for chunk in _chunks(images, batch_size)
            ]
        )

    def classify_files(
        self,
        loaded: LoadedModel,
        files: Sequence[tuple[str, bytes]],
        k: int = core_predict.DEFAULT_TOP_K,
        **kwargs,
    ) -> list[core_predict.Classification | core_predict.Failure]:
        """core.predict.classify_files with this model: top-k over its classes, Failures in place."""
        return core_predict.classify_files(self.as_loaded(loaded), files, k=k, **kwargs)


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- training -------------------------------------------------------------------------------------

# torchvision's random transforms draw from the global generator: fork it under this lock.
_GLOBAL_RNG_LOCK = threading.Lock()


def augmentation(spec: ModelSpec) -> v2.Compose:
    """Light augmentation on PIL images, then the weights' own normalisation, at the crop size."""
    preset = spec.transforms()
    return v2.Compose(
        [
            v2.RandomResizedCrop(preset.crop_size, scale=(0.6, 1.0), interpolation=preset.interpolation),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=preset.mean, std=preset.std),
        ]
    )


def _augmented_batch(augment: v2.Compose, images: list[Image.Image], seed: int) -> torch.Tensor:
    with _GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return torch.stack([augment(image) for image in images])


def _state(module: nn.Module | None) -> dict[str, torch.Tensor] | None:
    return None if module is None else {k: v.detach().clone() for k, v in module.state_dict().items()}


def train(
    loaded: LoadedModel,
    dataset: Dataset,
    config: TrainConfig,
    *,
    cache: FeatureCache | None = None,
    progress: Progress | None = None,
    on_epoch: Callable[[EpochLog], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_interrupt: Callable[[TrainedModel], None] | None = None,
) -> TrainedModel:
    """Train a new head (and in finetune mode a copy of the last block) on `dataset`.

    Holds back a stratified validation split, keeps the state with the lowest validation loss,
    stops after `config.patience` epochs without improvement, and checks `should_stop()` after
    every epoch (the first always completes). `loaded.module` is only ever read.

    If `on_epoch` or `progress` raises after an epoch, `on_interrupt` first receives the best
    model so far (`stopped_by_user=True`), then the exception propagates. Any BaseException
    counts: a click on a Streamlit page while it trains stops the running script this way, with
    a StopException (or RerunException) raised by the next `st.*` call in the callback.
    """
    spec = loaded.spec
    finetune = config.mode == "finetune"
    dataset.validate()
    classes = list(dataset.classes)
    index_of = {label: i for i, label in enumerate(classes)}
    train_items, val_items = stratified_split(dataset.items, val_fraction=config.val_fraction, seed=config.seed)
    if not train_items or not val_items:
        raise ZooScopeError("There are too few images to hold some back for validation: add more images to each class.")
    y_train = torch.tensor([index_of[item.label] for item in train_items])
    y_val = torch.tensor([index_of[item.label] for item in val_items])
    device = loaded.device

    view = backbone_view(loaded, finetune=finetune)
    generator = torch.Generator().manual_seed(config.seed)
    head = build_head(
        config.head, view.feature_dim, len(classes), hidden=config.hidden, dropout=config.dropout, generator=generator
    ).to(device)
    groups = [{"params": list(head.parameters()), "lr": config.lr}]
    if view.block is not None:
        groups.append({"params": [p for p in view.block.parameters() if p.requires_grad], "lr": config.block_lr})
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    if finetune:
        epoch_runner = _FinetuneEpochs(view, loaded, train_items, val_items, config)
    else:
        features = extract_features(
            view.module,
            loaded.preprocess,
            list(train_items) + list(val_items),
            backbone=spec.name,
            batch_size=config.batch_size,
            cache=cache,
            progress=progress,
            device=device,
        )
        epoch_runner = _FastEpochs(features[: len(train_items)].to(device), features[len(train_items) :].to(device))

    history: list[EpochLog] = []
    best_loss, best_epoch = math.inf, 0
    best_head, best_block, best_probs = _state(head), _state(view.block), None
    stopped_early = stopped_by_user = False

    def finish(*, stopped_early: bool, stopped_by_user: bool) -> TrainedModel:
        """The best state so far as the TrainedModel."""
        head.load_state_dict(best_head)
        head.eval().requires_grad_(False)
        block = None
        if view.block is not None:
            view.block.load_state_dict(best_block)
            block = view.block.eval().requires_grad_(False)
        metrics = evaluate(best_probs, y_val, classes, val_items)
        return TrainedModel(
            backbone=spec.name,
            weights_id=spec.weights_id,
            classes=classes,
            config=config,
            head=head,
            block=block,
            block_path=view.block_path,
            history=list(history),
            metrics=metrics,
            epochs_run=len(history),
            stopped_early=stopped_early,
            stopped_by_user=stopped_by_user,
            best_epoch=best_epoch,
            val_accuracy=metrics.accuracy,
        )

    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        head.train()
        total_loss, total_correct = 0.0, 0
        order = torch.randperm(len(train_items), generator=generator)
        for batch_number, indices in enumerate(order.split(config.batch_size)):
            inputs = epoch_runner.train_batch(indices, seed=_batch_seed(config.seed, epoch, batch_number))
            logits = head(inputs)
            targets = y_train[indices].to(device)
            loss = criterion(logits, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += float(loss.detach()) * len(indices)
            total_correct += int((logits.detach().argmax(dim=1) == targets).sum())
        head.eval()
        with torch.inference_mode():
            val_logits = head(epoch_runner.val_features()).float().cpu()
            val_loss = float(F.cross_entropy(val_logits, y_val))
            val_probs = val_logits.softmax(dim=1)
        log = EpochLog(
            epoch=epoch,
            train_loss=total_loss / len(train_items),
            train_acc=total_correct / len(train_items),
            val_loss=val_loss,
            val_acc=float((val_probs.argmax(dim=1) == y_val).float().mean()),
            seconds=time.perf_counter() - start,
        )
        history.append(log)
        improved = val_loss < best_loss or best_probs is None
        if improved:  # before the callbacks, so that an interruption there keeps this epoch too
            best_loss, best_epoch = val_loss, epoch
            best_head, best_block, best_probs = _state(head), _state(view.block), val_probs
        try:
            if on_epoch:
                on_epoch(log)
            if progress:
                progress(
                    epoch,
                    config.epochs,
                    f"Epoch {epoch} of {config.epochs}: validation loss {log.val_loss:.3f}, accuracy {log.val_acc:.1%}",
                )
        except BaseException:
            if on_interrupt is not None:
                on_interrupt(finish(stopped_early=False, stopped_by_user=True))
            raise
        if not improved and epoch - best_epoch >= config.patience:
            stopped_early = True
            break
        if should_stop is not None and should_stop():
            stopped_by_user = epoch < config.epochs
            break

    return finish(stopped_early=stopped_early, stopped_by_user=stopped_by_user)


def _batch_seed(seed: int, epoch: int, batch: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + batch) % (2**63)


class _FastEpochs:
    """Frozen backbone: every epoch reads the same cached feature vectors."""

    def __init__(self, train_features: torch.Tensor, val_features: torch.Tensor):
        self.train_features = train_features
        self._val_features = val_features

    def train_batch(self, indices: torch.Tensor, *, seed: int) -> torch.Tensor:
        return self.train_features[indices.to(self.train_features.device)]

    def val_features(self) -> torch.Tensor:
        return self._val_features


class _FinetuneEpochs:
    """Trainable last block: augmented images through the view every epoch (autograd from the block on)."""

    def __init__(
        self,
        view: BackboneView,
        loaded: LoadedModel,
        train_items: Sequence[LabelledImage],
        val_items: Sequence[LabelledImage],
        config: TrainConfig,
    ):
        self.view = view
        self.loaded = loaded
        self.train_items = train_items
        self.val_items = val_items
        self.batch_size = config.batch_size
        self.augment = augmentation(loaded.spec)

    def train_batch(self, indices: torch.Tensor, *, seed: int) -> torch.Tensor:
        images = [_decode(self.train_items[i]) for i in indices.tolist()]
        batch = _augmented_batch(self.augment, images, seed).to(self.loaded.device)
        return self.view.module(batch)  # the view stays in eval mode: BN statistics frozen

    def val_features(self) -> torch.Tensor:
        return extract_features(
            self.view.module,
            self.loaded.preprocess,
            self.val_items,
            batch_size=self.batch_size,
            device=self.loaded.device,
        ).to(self.loaded.device)
