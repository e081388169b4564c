"""Shrink: a catalogue model or your fine-tuned one made smaller (int8, pruned channels, both), every variant
measured here on your images, then one kept and shipped as a file a phone app loads."""

from __future__ import annotations

import streamlit as st
from PIL import Image

from core.datasets.labelled import Dataset, dataset_from_zip
from core.errors import ZooScopeError
from core.finetune.bundle import import_bundle
from core.finetune.trained import TrainedModel
from core.images import SUPPORTED_TYPES, ImageError, decode_image
from core.jobs.queue import JobCancelled
from core.models.catalog import all_specs
from core.models.keys import ModelKey
from core.shrink.run import RATIOS, ShrinkOptions
from core.shrink.source import (
    ShrinkInputError,
    bundle_source,
    catalogue_source,
    images_for_bundle,
    images_for_catalogue,
)
from ui.finetune import keys as finetune_keys
from ui.inputs import file_digest
from ui.loading import backbone_for_bundle, load_with_progress
from ui.navigation import FINETUNE, ensure_app, link_to
from ui.session import MY_MODEL, latest, reuse
from ui.shrink import last_run, run, ship_section, show_trade
from ui.text import verbatim

ensure_app()  # first: keeps a deep link to this page on the app (ui/navigation.py)

CATALOGUE, MINE = "A catalogue model", "My fine-tuned model"
IMAGES = "shrink_images"  # ui.session slot: the decoded images of the chosen source and uploads
BUNDLE = "shrink_bundle_model"  # ui.session slot: the uploaded bundle, imported once
MAX_FILE_MB = 120  # bigger models take too long to recover and too much memory on a small shared host


def catalogue_options() -> list[str]:
    """Models whose channels can be pruned and that a small host can recover, the bundled one first."""
    specs = all_specs()
    usable = [name for name, spec in specs.items() if spec.traits.channel_pruning and spec.file_size_mb <= MAX_FILE_MB]
    return sorted(usable, key=lambda name: (name != "efficientnet_lite0", specs[name].file_size_mb))


def photos(label: str, key: str, help_text: str) -> tuple[list[Image.Image], tuple]:
    """Uploaded photos, decoded; a file that is not a photo is named in the page and the rest go through."""
    uploads = st.file_uploader(label, type=list(SUPPORTED_TYPES), accept_multiple_files=True, key=key, help=help_text)
    decoded: list[Image.Image] = []
    files = tuple((upload.name, upload.getvalue()) for upload in uploads or [])
    for name, data in files:
        try:
            decoded.append(decode_image(data))
        except ImageError as error:
            st.warning(f"**{verbatim(name)}** was left out: {error}", icon=":material/broken_image:")
    return decoded, (file_digest(files) if files else None,)


def catalogue_choice():
    name = st.selectbox(
        "Model", catalogue_options(), key="shrink_model",
        help=f"Models whose channels can be pruned (not attention models), up to {MAX_FILE_MB} MB.",
    )  # fmt: skip
    with st.expander("Your photos (optional): what it is distilled and calibrated on, and judged on"):
        train, train_key = photos(
            "Photos to distil and calibrate on (no labels needed)", "shrink_photos",
            "Photos like the ones the model will see. Without them: variations of the example photos.",
        )  # fmt: skip
        held, held_key = photos(
            "Held-out photos to judge agreement on", "shrink_holdout",
            "Never the photos above. Without them: other variations of the example photos.",
        )  # fmt: skip
    loaded = load_with_progress(ModelKey(name)).torch
    key = (name, train_key, held_key)
    return catalogue_source(loaded), reuse(IMAGES, key, lambda: images_for_catalogue(train, held)), key


def labelled_images(trained: TrainedModel) -> tuple[Dataset | None, tuple]:
    """The images the model was trained on: Fine-tune's in this session when the classes match, else a zip."""
    dataset = latest(finetune_keys.DATASET)
    if dataset is not None and list(dataset.classes) == list(trained.classes):
        st.caption(f"Recovered and judged on the {len(dataset.items)} images it was trained on in Fine-tune.")
        return dataset, ("finetune", id(dataset))
    upload = st.file_uploader(
        "The labelled images it was trained on (a zip of class folders)", type=["zip"], key="shrink_dataset",
        help="Pruned models are recovered on its training split and judged on its validation split.",
    )  # fmt: skip
    if upload is None:
        return None, ()
    try:
        return dataset_from_zip(upload.getvalue()), ("zip", file_digest(((upload.name, upload.getvalue()),)))
    except ZooScopeError as error:
        st.error(f"**{verbatim(upload.name)}**: {error}", icon=":material/error:")
        return None, ()


def my_model_choice():
    trained = st.session_state.get(MY_MODEL)
    bundle = st.file_uploader("Or a bundle exported by Fine-tune (.zip)", type=["zip"], key="shrink_bundle")
    if bundle is not None:
        digest = file_digest(((bundle.name, bundle.getvalue()),))
        try:
            trained = reuse(BUNDLE, digest, lambda: import_bundle(bundle.getvalue(), loaded_for=backbone_for_bundle))
        except ZooScopeError as error:
            st.error(f"**{verbatim(bundle.name)}**: {error}", icon=":material/error:")
            return None
    if trained is None:
        st.info("Train a model on Fine-tune first, or upload its bundle here.", icon=":material/model_training:")
        link_to(FINETUNE, "Fine-tune a model")
        return None
    st.caption(f"{verbatim(trained.name)}: classes {', '.join(verbatim(name) for name in trained.classes)}.")
    dataset, data_key = labelled_images(trained)
    if dataset is None:
        return None
    loaded = backbone_for_bundle(trained.backbone_key)
    key = (id(trained), data_key)
    return (
        bundle_source(trained, loaded),
        reuse(IMAGES, key, lambda: images_for_bundle(trained, dataset, loaded.spec)),
        key,
    )


def options_inputs() -> ShrinkOptions:
    left, middle, right = st.columns([2, 1, 1])
    ratios = left.multiselect(
        "Prune this share of the channels", RATIOS, default=[0.5], format_func=lambda r: f"{r:.0%}",
        key="shrink_ratios", help="Whole channels removed (torch-pruning keeps residual and depthwise groups whole).",
    )  # fmt: skip
    epochs = middle.number_input("Recovery epochs", min_value=0, max_value=20, value=4, key="shrink_epochs")
    int8 = right.toggle("int8", value=True, key="shrink_int8", help="ONNX Runtime's static int8, of each variant")
    zeros = right.toggle(
        "Zeroed weights", value=True, key="shrink_zeros",
        help="Unstructured pruning: 30% of the single weights zeroed, to see what it buys on a CPU.",
    )  # fmt: skip
    return ShrinkOptions(ratios=tuple(sorted(ratios)), int8=int8, zeros=zeros, recover_epochs=int(epochs))


def main() -> None:
    st.title("Shrink")
    st.caption(
        "Make a model smaller for a phone or a small server: int8, whole channels pruned then recovered, or both. "
        "Every variant is measured here on your images; keep one and take it as a file an app loads."
    )
    kind = st.radio("What to shrink", [CATALOGUE, MINE], horizontal=True, key="shrink_kind")
    try:
        chosen = catalogue_choice() if kind == CATALOGUE else my_model_choice()
    except ShrinkInputError as error:
        st.error(str(error), icon=":material/error:")
        return
    except JobCancelled:
        return  # a model's first load was cancelled: in_line said so
    options = options_inputs()
    if chosen is not None:
        source, images, inputs_key = chosen
        st.caption(f"Images: {images.description}.")
        if st.button("Shrink", type="primary", key="shrink_go", icon=":material/compress:"):
            run((kind, inputs_key, options), source, images, options)
    shrunk = last_run()
    if shrunk is None:
        return
    st.subheader(f"The trade: {verbatim(shrunk.result.source)}")
    show_trade(shrunk)
    st.subheader("Keep one and ship it")
    from core.shrink.ship import executorch_available

    ship_section(shrunk, executorch_available())


main()
