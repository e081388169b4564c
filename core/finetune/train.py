"""Transfer learning on a shared, read-only backbone: a new head (and optionally a copy of the last block).

Training builds a private view of the shared model (core.finetune.backbone) and trains only
modules that belong to this person:

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

import math
import threading
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import v2

from core.catalog import ModelSpec
from core.errors import ZooScopeError
from core.finetune.backbone import BackboneView, backbone_view
from core.finetune.config import EpochLog, TrainConfig
from core.finetune.data import Dataset, LabelledImage, stratified_split
from core.finetune.extraction import FeatureCache, decode_item, extract_features
from core.finetune.heads import build_head
from core.finetune.metrics import evaluate
from core.finetune.threshold import default_threshold
from core.finetune.trained import TrainedModel
from core.loading import LoadedModel
from core.progress import Progress

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
            threshold=default_threshold(metrics.outcomes, len(classes)),
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
        images = [decode_item(self.train_items[i]) for i in indices.tolist()]
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
