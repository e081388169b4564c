"""The training settings: backbone, mode, how much of the network trains, and the rest in an expander."""

from __future__ import annotations

import streamlit as st

from core.datasets.labelled import Dataset
from core.errors import ZooScopeError
from core.finetune.config import MODE_DEFAULTS, MODES, TrainConfig
from core.finetune.depth import DEPTH_LABELS, DEPTHS
from core.finetune.heads import HEAD_TYPES
from core.models import bundled, weights
from core.models.catalog import ModelSpec, all_specs, curated_specs, get_spec
from ui.finetune import keys
from ui.finetune.costs import lr_finder, time_estimates
from ui.finetune.features_from import features_from_choice
from ui.finetune.scratch import scratch_budget
from ui.weights import weights_select

MODE_LABELS = {
    "fast": "Fast: the head alone, on frozen features computed once (seconds)",
    "finetune": "Fine-tune: the head first, then more of the network, on augmented images (minutes)",
    "scratch": "From scratch (baseline): random weights, the whole network, for the same time",
}
LR_OPTIONS = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
WEIGHT_DECAYS = [0.0, 1e-5, 1e-4, 1e-3, 1e-2, 0.05, 0.1]
TRAIN_SIZES = (192, 160, 128, 96)


def backbone_options() -> list[str]:
    curated = [spec.name for spec in curated_specs() if spec.name not in bundled.NAMES]
    return [*bundled.NAMES, *curated]


def backbone_label(spec: ModelSpec) -> str:
    offline = "" if weights.is_available(spec) else " · downloads on first use"
    return f"{spec.name} · {spec.acc1:.1f}% ImageNet top-1 · {spec.file_size_mb:.0f} MB{offline}"


def mode_changed() -> None:
    # Each mode's own defaults (fine-tuning: fewer epochs, weight decay and label smoothing as timm uses them).
    for name, value in MODE_DEFAULTS[st.session_state[keys.MODE]].items():
        st.session_state[keys.setting(name)] = value


def training_sizes(spec: ModelSpec) -> list[int | None]:
    """None (the model's own, the default) first, then the lower ones it takes."""
    return [None, *(size for size in TRAIN_SIZES if size < spec.input_size)]


def finetune_settings(spec: ModelSpec, columns, *, scratch: bool = False) -> dict:
    """Fine-tune mode's own settings: batch norm, flips, the training resolution (from scratch: the same
    augmentations, and batch norm always learns its statistics, having none from ImageNet)."""
    left, middle, right = columns
    adapt = scratch or left.checkbox(
        "Let batch-norm statistics adapt",
        key="finetune_adapt_batchnorm",
        help=(
            "Off (recommended): the layers keep the mean and variance they learnt on ImageNet's millions of "
            "photos and only their weights train. A few hundred images give noisy statistics, and the features "
            "the head learnt from shift under it when they change. On: the statistics follow your images (in "
            "your own copy only), which can help when they look nothing like photos."
        ),
    )
    flip = middle.checkbox(
        "Random horizontal flips",
        key="finetune_flip",
        help=(
            "Off by default: orientation can be what tells classes apart. A mirrored 2 is not a 2, and text, "
            "arrows, left/right body parts or road signs flipped are other things. Turn it on for photos of "
            "things that look the same mirrored (animals, plants, objects)."
        ),
    )
    size = right.selectbox(
        "Training resolution",
        training_sizes(spec),
        format_func=lambda value: f"{spec.input_size} px (the model's own)" if value is None else f"{value} px",
        key="finetune_train_size",
        help=(
            "Lower trains faster but less accurately: with batch-norm statistics frozen, features of images "
            "seen smaller in training than in use disagree (measured on rendered digits: 0.88 at 160 px against "
            "0.97 at 224). Validation, Try it and Classify always use the model's own resolution."
        ),
    )
    return {"adapt_batchnorm": adapt, "flip": flip, "train_size": size}


def training_settings(dataset: Dataset) -> tuple[str, TrainConfig, str | None] | None:
    """(backbone, config, weights version: None for the default) as chosen; None (with the reason on screen)
    where the settings do not make one."""
    specs = all_specs()
    model, mode = st.columns([2, 3])
    backbone = model.selectbox(
        "Backbone",
        backbone_options(),
        format_func=lambda name: backbone_label(specs[name]),
        key="finetune_backbone",
        help="The ImageNet model whose features your classes are learned from.",
    )
    version = weights_select(backbone, model, key="finetune_weights")
    mode_name = mode.radio(
        "Mode", MODES, format_func=MODE_LABELS.get, key=keys.MODE, on_change=mode_changed, horizontal=True
    )
    for name, value in MODE_DEFAULTS[mode_name].items():
        st.session_state.setdefault(keys.setting(name), value)
    finetune = mode_name == "finetune"
    unfreeze = depth_choice() if finetune else TrainConfig().unfreeze
    budget = scratch_budget(dataset) if mode_name == "scratch" else None
    # Fast mode's head may read an earlier stage's features, the network cut there.
    stage = features_from_choice(get_spec(backbone, version)) if mode_name == "fast" else None
    estimates = st.empty()
    with st.expander("Training settings", icon=":material/tune:"):
        left, middle, right = st.columns(3)
        head = left.radio(
            "Head", HEAD_TYPES, key="finetune_head", horizontal=True, help="linear: one layer; mlp: one hidden layer"
        )
        epochs = left.number_input(
            "Epochs", 1, 500, key=keys.setting("epochs"), help="At most; early stopping may end sooner"
        )
        patience = left.number_input(
            "Patience",
            1,
            100,
            key=keys.setting("patience"),
            help="Stop after this many epochs without a lower validation loss",
        )
        lr = middle.select_slider(
            "Learning rate",
            LR_OPTIONS,
            1e-3,
            format_func="{:g}".format,
            key=keys.LR,
            help="The head's; in fine-tune mode, earlier layers train at lower rates (shares of this one).",
        )
        batch_size = middle.select_slider("Batch size", [8, 16, 32, 64, 128], 32, key="finetune_batch_size")
        weight_decay = right.select_slider(
            "Weight decay", WEIGHT_DECAYS, format_func="{:g}".format, key=keys.setting("weight_decay")
        )
        smoothing = right.slider("Label smoothing", 0.0, 0.3, step=0.05, key=keys.setting("label_smoothing"))
        extra: dict = {}
        if mode_name != "fast":  # the baseline trains on the same augmented images as fine-tuning
            extra = finetune_settings(get_spec(backbone, version), st.columns(3), scratch=mode_name == "scratch")
        try:
            config = TrainConfig(
                mode=mode_name,
                head=head,
                epochs=int(epochs),
                lr=lr,
                batch_size=batch_size,
                weight_decay=weight_decay,
                label_smoothing=smoothing,
                patience=int(patience),
                unfreeze=unfreeze,
                time_budget_s=budget,
                **extra,
                features_from=stage,
            )
        except ZooScopeError as error:
            st.error(str(error), icon=":material/error:")
            return None
        lr_finder(dataset, backbone, config, LR_OPTIONS, version)
    if finetune:
        with estimates.container():
            time_estimates(dataset, backbone, config, version)
    return backbone, config, version


def depth_choice() -> str:
    return st.radio(
        "How much of the network trains",
        DEPTHS,
        format_func=DEPTH_LABELS.get,
        index=DEPTHS.index(TrainConfig().unfreeze),
        key="finetune_unfreeze",
        horizontal=True,
        help=(
            "The head always trains first, alone, on frozen features. Then: the head again on augmented images, "
            "or the last block, the last half, or the whole network with it, at lower learning rates for "
            "earlier layers. The further your images are from everyday photos, the deeper it pays to go; "
            "the deeper, the longer it takes."
        ),
    )
