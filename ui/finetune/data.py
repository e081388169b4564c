"""The images in: a zip of class folders, classes one by one, or the example dataset; checked once and shown."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd
import streamlit as st
from PIL import Image
from streamlit.runtime.uploaded_file_manager import UploadedFile

from core.datasets.labelled import Dataset, dataset_from_uploads, dataset_from_zip, split_frame, stratified_split
from core.datasets.zips import FOLDER_ENTRY, Skipped
from core.errors import ImageError, ZooScopeError
from core.finetune.config import TrainConfig
from core.finetune.examples import EXAMPLE_DESCRIPTION, example_dataset
from core.images import SUPPORTED_TYPES, decode_image, thumbnail
from core.progress import Progress
from ui.finetune import keys
from ui.progress import progress_bar
from ui.session import latest, reuse
from ui.tables import data_table
from ui.text import counted, short_name, verbatim

MAX_CLASSES = 50
PREVIEW_PER_CLASS = 6
PREVIEW_CLASSES = 12  # classes previewed with thumbnails; the counts table holds them all
PREVIEW_SIDE = 96
PREVIEW_CAPTION = 13  # characters of a file name that fit on one line under a preview PREVIEW_SIDE wide

Previews = dict[str, list[tuple[str, Image.Image]]]  # class -> (file name, thumbnail) of its first images


@dataclass(frozen=True)
class DatasetRead:
    """What reading a set of uploads gave: the dataset and its thumbnails, or why it could not be read."""

    dataset: Dataset | None  # None: not readable, `error` says why
    previews: Previews = field(default_factory=dict)
    error: str = ""


@dataclass(frozen=True)
class KeptDataset:
    """The person's own dataset as last read, under a key no widget owns: Streamlit empties a widget whose
    page is not drawn, so a visit to another page would otherwise lose the upload."""

    name: str  # "faces.zip", or "2 classes added one by one"
    read: DatasetRead


def preview(data: bytes, side: int = PREVIEW_SIDE) -> Image.Image | None:
    try:
        return thumbnail(decode_image(data), side)
    except ImageError:
        return None


def dataset_previews(dataset: Dataset) -> Previews:
    """A few thumbnails for each of the first classes: computed once when the dataset is read."""
    previews: Previews = {}
    for label in dataset.classes[:PREVIEW_CLASSES]:
        members = [item for item in dataset.items if item.label == label][:PREVIEW_PER_CLASS]
        previews[label] = [(item.name, image) for item in members if (image := preview(item.data)) is not None]
    return previews


def class_uploads() -> dict[str, list[UploadedFile]]:
    """Teachable-Machine style: a name and some images per class (classes given the same name merge)."""
    count = st.number_input("Number of classes", 2, MAX_CLASSES, 2, key="finetune_class_count")
    classes: dict[str, list[UploadedFile]] = {}
    columns = st.columns(2)
    for i in range(count):
        with columns[i % 2].container(border=True):
            name = st.text_input("Class name", f"Class {i + 1}", key=f"finetune_class_name_{i}", max_chars=100)
            uploads = st.file_uploader(
                "Images of this class",
                type=list(SUPPORTED_TYPES),
                accept_multiple_files=True,
                key=f"finetune_class_files_{i}",
                on_change=class_files_changed,
            )
        classes.setdefault(name, []).extend(uploads or [])
    return classes if any(classes.values()) else {}


def read_uploads(classes: dict[str, list[UploadedFile]]) -> dict[str, list[tuple[str, bytes]]]:
    return {name: [(upload.name, upload.getvalue()) for upload in files] for name, files in classes.items()}


def read_dataset(key: tuple, parse: Callable[[Progress], Dataset], slot) -> DatasetRead:
    """Parse once per set of uploads (`key` holds their upload ids); reruns reuse the dataset (or the error)
    and its thumbnails without reading a byte.

    The progress bar goes in `slot`, a placeholder drawn on every run, so that the elements below keep
    their places (and an open expander stays open) whether or not this run had to parse.
    """

    def read() -> DatasetRead:
        with slot.container(), progress_bar("Checking every image…") as progress:
            try:
                dataset = parse(lambda done, total, message: progress(done, total, verbatim(message)))
            except ZooScopeError as error:
                return DatasetRead(None, error=str(error))
            return DatasetRead(dataset, dataset_previews(dataset))

    return reuse(keys.DATASET, key, read)


def last_dataset() -> Dataset | None:
    """The dataset the page read last (None if none, or if it could not be read)."""
    read = latest(keys.DATASET)
    return read.dataset if read is not None else None


def use_example(chosen: bool) -> None:
    st.session_state[keys.EXAMPLE] = chosen


def forget_kept() -> None:
    st.session_state.pop(keys.KEPT, None)


def zip_changed() -> None:
    """The person removed the zip (leaving the page fires no callback): the kept dataset goes with it."""
    if st.session_state.get("finetune_zip") is None:
        forget_kept()


def class_files_changed() -> None:
    """The person removed the last class image: the kept dataset goes with it."""
    count = st.session_state.get("finetune_class_count", 0)
    if not any(st.session_state.get(f"finetune_class_files_{i}") for i in range(count)):
        forget_kept()


def show_kept(kept: KeptDataset) -> None:
    """What the page goes on using after a visit elsewhere, and the ways to change it."""
    dataset = kept.read.dataset
    assert dataset is not None, "only readable datasets are kept"
    sizes = f"{counted(len(dataset.items), 'image')} in {counted(len(dataset.classes), 'class')}"
    using, clear = st.columns([4, 1], vertical_alignment="center")
    using.info(
        f"Using {verbatim(kept.name)}: {sizes}. Add a zip or images above to replace it.",
        icon=":material/dataset:",
    )
    clear.button("Clear these images", key="finetune_clear_dataset", on_click=forget_kept, icon=":material/close:")


def data_section() -> Dataset | None:
    """The images, checked and summarised; None (with the reason on screen) until they can train a model.

    The person's own images come first; the example dataset stands in until they bring some.
    """
    zip_tab, classes_tab = st.tabs(["Zip of class folders", "Classes one by one"])
    with zip_tab:
        archive = st.file_uploader(
            "A zip with one folder of images per class",
            type=["zip"],
            key="finetune_zip",
            on_change=zip_changed,
            help="The layout torchvision's ImageFolder reads: `cat/1.jpg`, `dog/2.png`; one wrapping folder is fine.",
        )
    with classes_tab:
        classes = class_uploads()
    slot = st.empty()

    own = ""  # the name of the person's own images, when they brought some this run
    if archive is not None:
        if classes:
            st.info("Training uses the zip; remove it to train on the classes added one by one.")
        key: tuple[object, ...] = ("zip", archive.file_id)
        read = read_dataset(key, lambda p: dataset_from_zip(archive.getvalue(), progress=p), slot)
        own = archive.name
    elif classes:
        key = ("classes", tuple((name, tuple(upload.file_id for upload in files)) for name, files in classes.items()))
        read = read_dataset(key, lambda p: dataset_from_uploads(read_uploads(classes), progress=p), slot)
        own = f"{counted(len(classes), 'class')} added one by one"
    elif (kept := st.session_state.get(keys.KEPT)) is not None:
        show_kept(kept)
        read = kept.read
    elif st.session_state.get(keys.EXAMPLE):
        example, remove = st.columns([4, 1], vertical_alignment="center")
        example.info(f"The example dataset: {EXAMPLE_DESCRIPTION}.", icon=":material/dataset:")
        remove.button("Remove the example", key="finetune_remove_example", on_click=use_example, args=(False,))
        read = read_dataset(("example",), lambda p: example_dataset(progress=p), slot)
    else:
        st.info(
            "Add your images above: a zip of class folders, or a few images for each class. "
            "Or try the example dataset first."
        )
        st.button(
            "Try an example dataset",
            key="finetune_try_example",
            on_click=use_example,
            args=(True,),
            icon=":material/dataset:",
            type="primary",
            help=f"{EXAMPLE_DESCRIPTION}; train on it in seconds.",
        )
        return None
    if own:
        st.session_state[keys.EXAMPLE] = False  # the person's own images replace the example for good
        if read.dataset is not None:
            st.session_state[keys.KEPT] = KeptDataset(own, read)

    dataset = read.dataset
    if dataset is None:
        st.error(verbatim(read.error), icon=":material/error:")
        return None
    show_dataset(dataset, read.previews)
    try:
        dataset.validate()
    except ZooScopeError as error:
        st.error(verbatim(str(error)), icon=":material/error:")
        return None
    return dataset


def skipped_frame(skipped: Sequence[Skipped]) -> tuple[pd.DataFrame, int]:
    """(file, reason) of every skipped file, and how many folder entries were left out of the list."""
    files = [entry for entry in skipped if entry.reason != FOLDER_ENTRY]
    frame = pd.DataFrame([{"file": e.name, "reason": e.reason} for e in files], columns=["file", "reason"])
    return frame, len(skipped) - len(files)


def show_dataset(dataset: Dataset, previews: Previews) -> None:
    total = len(dataset.items)
    st.subheader(f"{counted(total, 'image')} in {counted(len(dataset.classes), 'class')}")
    counts, pictures = st.columns([1, 2], gap="medium")
    data_table(dataset.counts_frame(), container=counts, hide_index=True)
    with pictures:
        for label, thumbs in previews.items():
            st.markdown(f"**{verbatim(label)}**")
            if thumbs:
                captions = [verbatim(short_name(name.rsplit("/", 1)[-1], PREVIEW_CAPTION)) for name, _ in thumbs]
                st.image([image for _, image in thumbs], caption=captions, width=PREVIEW_SIDE)
        hidden = len(dataset.classes) - len(previews)
        if hidden > 0:
            st.caption(f"Previews of the first {len(previews)} classes; the table lists all {len(dataset.classes)}.")

    frame, folders = skipped_frame(dataset.skipped)
    if len(frame):
        with st.expander(f"{counted(len(frame), 'file')} skipped, each with its reason", icon=":material/block:"):
            data_table(frame, hide_index=True, width="stretch")
            if folders:
                st.caption(f"Not listed: {counted(folders, 'folder entry', 'folder entries')} of the zip.")
    if dataset.warnings:
        warnings = [verbatim(warning) for warning in dataset.warnings]
        text = warnings[0] if len(warnings) == 1 else "\n".join(f"- {warning}" for warning in warnings)
        st.warning(text, icon=":material/warning:")


def validation_split(dataset: Dataset) -> None:
    """The images held back for validation, per class: the split every training of these images uses."""
    st.markdown("**Held back for validation** (the same split for the same images, every time)")
    defaults = TrainConfig()
    train_items, val_items = stratified_split(dataset.items, val_fraction=defaults.val_fraction, seed=defaults.seed)
    data_table(split_frame(train_items, val_items), hide_index=True)
