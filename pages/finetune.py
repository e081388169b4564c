"""Fine-tune: teach a model your own classes, watch it learn, see its mistakes, then use and export it."""

import math
from collections.abc import Callable

import streamlit as st
from streamlit.runtime.uploaded_file_manager import UploadedFile

from core import bundled, weights
from core.catalog import ModelSpec, all_specs, curated_specs
from core.charts import training_curves
from core.errors import ZooScopeError
from core.finetune.bundle import export_bundle, export_onnx, preprocessing
from core.finetune.config import MODES, TrainConfig
from core.finetune.data import Dataset, dataset_from_uploads, dataset_from_zip, split_frame, stratified_split
from core.finetune.examples import EXAMPLE_DESCRIPTION, example_dataset
from core.finetune.heads import HEAD_TYPES
from core.finetune.threshold import NOT_SURE, passing_share, with_threshold
from core.finetune.train import train
from core.finetune.trained import TrainedModel
from core.images import SUPPORTED_TYPES
from core.predict import Classification, Failure
from core.progress import Progress
from ui.finetune_views import (
    LiveTraining,
    TrainingRun,
    dataset_previews,
    feature_cache,
    history_frame,
    show_dataset,
    show_gallery,
    show_metrics,
    show_summary,
)
from ui.inputs import file_digest
from ui.loading import load_with_progress
from ui.navigation import CLASSIFY, ensure_app
from ui.progress import progress_bar
from ui.session import CLASSIFY_MODEL, MY_MODEL, MY_MODEL_OPTION, reuse
from ui.tables import data_table, top_k_table
from ui.text import verbatim
from ui.threshold import answer_line, threshold_slider

ensure_app()  # first: keeps a deep link to this page on the app (ui/navigation.py)

EXAMPLE_KEY = "finetune_example"  # True once "Try an example dataset" was clicked (until the person brings data)
RUN_KEY = "finetune_run"  # a ui.finetune_views.TrainingRun: the training in progress, or one a click interrupted
DEFAULT_EPOCHS = {"fast": 30, "finetune": 5}
MODE_LABELS = {
    "fast": "Fast: frozen backbone, features computed once (seconds)",
    "finetune": "Fine-tune: the last block learns too, on augmented images (minutes)",
}
MAX_CLASSES = 50
TRY_TOP_K = 5


# --- data in --------------------------------------------------------------------------------------


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
            )
        classes.setdefault(name, []).extend(uploads or [])
    return classes if any(classes.values()) else {}


def read_uploads(classes: dict[str, list[UploadedFile]]) -> dict[str, list[tuple[str, bytes]]]:
    return {name: [(upload.name, upload.getvalue()) for upload in files] for name, files in classes.items()}


def read_dataset(key: tuple, parse: Callable[[Progress], Dataset], slot) -> tuple[Dataset | None, dict]:
    """Parse once per set of uploads (`key` holds their upload ids); reruns reuse the dataset (or the error)
    and its thumbnails without reading a byte.

    The progress bar goes in `slot`, a placeholder drawn on every run, so that the elements below keep
    their places (and an open expander stays open) whether or not this run had to parse.
    """
    previous = st.session_state.get("finetune_dataset")
    if previous and previous[0] == key:
        return previous[1], previous[2]
    with slot.container(), progress_bar("Checking every image…") as progress:
        try:
            dataset = parse(lambda done, total, message: progress(done, total, verbatim(message)))
        except ZooScopeError as error:
            st.session_state["finetune_dataset"] = (key, None, {"error": str(error)})
            return None, {"error": str(error)}
        previews = dataset_previews(dataset)
    st.session_state["finetune_dataset"] = (key, dataset, previews)
    return dataset, previews


def use_example(chosen: bool) -> None:
    st.session_state[EXAMPLE_KEY] = chosen


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
            help="The layout torchvision's ImageFolder reads: `cat/1.jpg`, `dog/2.png`; one wrapping folder is fine.",
        )
    with classes_tab:
        classes = class_uploads()
    slot = st.empty()

    if archive is not None:
        if classes:
            st.info("Training uses the zip; remove it to train on the classes added one by one.")
        key = ("zip", archive.file_id)
        dataset, previews = read_dataset(key, lambda p: dataset_from_zip(archive.getvalue(), progress=p), slot)
    elif classes:
        key = ("classes", tuple((name, tuple(upload.file_id for upload in files)) for name, files in classes.items()))
        dataset, previews = read_dataset(key, lambda p: dataset_from_uploads(read_uploads(classes), progress=p), slot)
    elif st.session_state.get(EXAMPLE_KEY):
        example, remove = st.columns([4, 1], vertical_alignment="center")
        example.info(f"The example dataset: {EXAMPLE_DESCRIPTION}.", icon=":material/dataset:")
        remove.button("Remove the example", key="finetune_remove_example", on_click=use_example, args=(False,))
        dataset, previews = read_dataset(("example",), lambda p: example_dataset(progress=p), slot)
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
    if archive is not None or classes:
        st.session_state[EXAMPLE_KEY] = False  # the person's own images replace the example for good

    if dataset is None:
        st.error(verbatim(previews["error"]), icon=":material/error:")
        return None
    show_dataset(dataset, previews)
    try:
        dataset.validate()
    except ZooScopeError as error:
        st.error(verbatim(str(error)), icon=":material/error:")
        return None
    return dataset


# --- settings and training ------------------------------------------------------------------------


def backbone_options() -> list[str]:
    curated = [spec.name for spec in curated_specs() if spec.name not in bundled.NAMES]
    return [*bundled.NAMES, *curated]


def backbone_label(spec: ModelSpec) -> str:
    offline = "" if weights.is_available(spec) else " · downloads on first use"
    return f"{spec.name} · {spec.acc1:.1f}% ImageNet top-1 · {spec.file_size_mb:.0f} MB{offline}"


def mode_changed() -> None:
    st.session_state["finetune_epochs"] = DEFAULT_EPOCHS[st.session_state["finetune_mode"]]


def settings() -> tuple[str, TrainConfig] | None:
    specs = all_specs()
    model, mode = st.columns([2, 3])
    backbone = model.selectbox(
        "Backbone",
        backbone_options(),
        format_func=lambda name: backbone_label(specs[name]),
        key="finetune_backbone",
        help="The ImageNet model whose features your classes are learned from.",
    )
    mode_name = mode.radio(
        "Mode", MODES, format_func=MODE_LABELS.get, key="finetune_mode", on_change=mode_changed, horizontal=True
    )
    st.session_state.setdefault("finetune_epochs", DEFAULT_EPOCHS[mode_name])
    with st.expander("Training settings", icon=":material/tune:"):
        left, middle, right = st.columns(3)
        head = left.radio(
            "Head", HEAD_TYPES, key="finetune_head", horizontal=True, help="linear: one layer; mlp: one hidden layer"
        )
        epochs = left.number_input(
            "Epochs", 1, 500, key="finetune_epochs", help="At most; early stopping may end sooner"
        )
        patience = left.number_input(
            "Patience",
            1,
            100,
            5,
            key="finetune_patience",
            help="Stop after this many epochs without a lower validation loss",
        )
        lr = middle.select_slider(
            "Learning rate", [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2], 1e-3, format_func="{:g}".format, key="finetune_lr"
        )
        batch_size = middle.select_slider("Batch size", [8, 16, 32, 64, 128], 32, key="finetune_batch_size")
        weight_decay = right.select_slider(
            "Weight decay", [0.0, 1e-5, 1e-4, 1e-3, 1e-2], 1e-4, format_func="{:g}".format, key="finetune_weight_decay"
        )
        smoothing = right.slider("Label smoothing", 0.0, 0.3, 0.0, 0.05, key="finetune_label_smoothing")
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
        )
    except ZooScopeError as error:
        st.error(str(error), icon=":material/error:")
        return None
    return backbone, config


def stop_clicked() -> None:
    # Runs at the start of the run that the click started (the training run is being stopped meanwhile).
    if run := st.session_state.get(RUN_KEY):
        run.stop_clicked = True


def train_live(dataset: Dataset, backbone: str, config: TrainConfig, run: TrainingRun) -> TrainedModel | None:
    """Train with progress bars and a live chart; None (with the reason on screen) if it cannot."""
    try:
        loaded = load_with_progress(backbone)
    except ZooScopeError as error:
        st.error(str(error), icon=":material/cloud_off:")
        return None
    live = LiveTraining(config, backbone=backbone)
    try:
        return train(
            loaded,
            dataset,
            config,
            cache=feature_cache(),
            progress=live.progress,
            on_epoch=live.on_epoch,
            on_interrupt=run.keep,
        )
    except ZooScopeError as error:
        live.clear()
        st.error(verbatim(str(error)), icon=":material/error:")
        return None


def run_training(dataset: Dataset, backbone: str, config: TrainConfig) -> None:
    """Train; a click on Stop (or anywhere else) while it runs ends it with the best model so far.

    The click starts a new run of the page at once and stops this one at its next st.* call, the chart
    update after an epoch: train() hands its best model to `run.keep` there, and the new run picks it up.
    """
    run = TrainingRun()
    st.button(
        "Stop",
        key="finetune_stop",
        on_click=stop_clicked,
        icon=":material/stop_circle:",
        help="Ends the training after the current epoch and keeps the best model so far.",
    )
    st.session_state[RUN_KEY] = run  # from here on `finished` is always set: a later run waits for it
    try:
        trained = train_live(dataset, backbone, config, run)
        run.model, run.done = trained, True
    finally:
        run.finished.set()
    if trained is None:
        return
    st.session_state[MY_MODEL] = trained
    st.rerun()  # draw the results without the Stop button and the live view


def collect_training_run() -> None:
    """Take over the model of a training run that a click interrupted (waiting for it to stop), and say so."""
    run = st.session_state.get(RUN_KEY)
    if run is None:
        return
    if not run.finished.is_set():
        with st.spinner("Stopping the training at the end of the current epoch…"):
            run.wait()
    del st.session_state[RUN_KEY]
    kept = run.model
    if kept is not None and st.session_state.get(MY_MODEL) is not kept:
        st.session_state[MY_MODEL] = kept
    if run.done:
        return
    if kept is None:
        st.info("The training stopped before its first epoch ended, so there is no model to keep.")
        return
    where = f"after epoch {kept.epochs_run}: kept the best epoch so far ({kept.best_epoch})"
    if run.stop_clicked:
        st.info(f"Stopped {where}.", icon=":material/stop_circle:")
    else:
        st.warning(f"The training was interrupted by a change on the page {where}.", icon=":material/warning:")


# --- the trained model ----------------------------------------------------------------------------


def not_sure_setting(trained: TrainedModel) -> None:
    """The threshold slider, and what it means on the validation images."""
    slider, meaning = st.columns([1, 2], vertical_alignment="center")
    threshold = threshold_slider(trained, "finetune_threshold", container=slider)
    passing = ""
    if trained.metrics is not None and not math.isnan(share := passing_share(trained.metrics.outcomes, threshold)):
        passing = f"{share:.0%} of the correctly classified validation images reach it; "
    meaning.caption(f"{passing}an answer below {threshold:.0%} reads “{NOT_SURE}”.")


def try_it(trained: TrainedModel) -> None:
    st.subheader("Try it")
    if st.button("Use it on the Classify page", key="finetune_use_on_classify", icon=":material/image_search:"):
        st.session_state[CLASSIFY_MODEL] = MY_MODEL_OPTION
        st.switch_page(CLASSIFY.file)
    not_sure_setting(trained)
    files = st.file_uploader(
        "Photos to classify with your model",
        type=list(SUPPORTED_TYPES),
        accept_multiple_files=True,
        key="finetune_try_files",
    )
    if not files:
        return
    pairs = [(upload.name, upload.getvalue()) for upload in files]
    k = min(TRY_TOP_K, len(trained.classes))
    key = (trained, file_digest(tuple(pairs)))
    try:
        results = reuse(
            "finetune_try_last",
            key,
            lambda: trained.classify_files(load_with_progress(trained.backbone), pairs, k, thumbnails=True),
        )
    except ZooScopeError as error:
        st.error(str(error), icon=":material/error:")
        return
    for result in with_threshold(results, trained.threshold):  # the slider's value, without classifying again
        if isinstance(result, Failure):
            st.error(f"**{verbatim(result.file)}**: {verbatim(result.error)}", icon=":material/broken_image:")
            continue
        show_try_result(result)


def show_try_result(result: Classification) -> None:
    with st.container(border=True):
        picture, numbers = st.columns([1, 3], gap="medium")
        picture.image(result.thumbnail, caption=verbatim(result.file), width="stretch")
        numbers.markdown(answer_line(result))
        top_k_table(result, show_rank=False, container=numbers)


def export(trained: TrainedModel) -> None:
    st.subheader("Export")
    stem = f"zooscope-{trained.backbone}-{len(trained.classes)}classes"
    bundle, onnx = st.columns(2, gap="large")
    with bundle:
        try:
            data = reuse("finetune_bundle", (trained, trained.threshold), lambda: export_bundle(trained))
        except ZooScopeError as error:
            st.error(str(error), icon=":material/error:")
        else:
            st.download_button(
                "Download the model bundle (.zip)",
                data,
                file_name=f"{stem}.zip",
                mime="application/zip",
                key="finetune_download_bundle",
                on_click="ignore",
                icon=":material/download:",
                type="primary",
            )
        st.caption(
            "`manifest.json` (backbone, classes, preprocessing, settings) and `weights.safetensors` (no pickle). "
            f"Load it on the Classify page, or run `python -m core classify --bundle {stem}.zip photo.jpg`."
        )
    with onnx:
        if st.button("Prepare the ONNX model", key="finetune_prepare_onnx", icon=":material/build:"):
            try:
                with st.spinner("Exporting the whole model (backbone and head) to ONNX…"):
                    model = export_onnx(trained, load_with_progress(trained.backbone))
            except Exception as error:  # noqa: BLE001 - the exporter fails in many ways; say so, keep the page
                st.error(f"The ONNX export failed: {error}", icon=":material/error:")
            else:
                st.session_state["finetune_onnx"] = (trained, model)
        prepared = st.session_state.get("finetune_onnx")
        if prepared is not None and prepared[0] is trained:
            st.download_button(
                "Download the ONNX model",
                prepared[1],
                file_name=f"{stem}.onnx",
                mime="application/octet-stream",
                key="finetune_download_onnx",
                on_click="ignore",
                icon=":material/download:",
            )
        steps = preprocessing(all_specs()[trained.backbone])
        st.caption(
            f"Input `image`: float32 (N, 3, {steps['crop']}, {steps['crop']}), an RGB photo resized to "
            f"{steps['resize']} ({steps['interpolation']}), centre-cropped to {steps['crop']}, scaled to 0-1 and "
            f"normalised with mean {steps['mean']} and std {steps['std']}. "
            f"Output `logits` (N, {len(trained.classes)}); "
            "the class names are in the model's metadata (`classes`)."
        )


def results(trained: TrainedModel) -> None:
    st.divider()
    st.header(trained.name)
    show_summary(trained)
    if trained.history:
        st.altair_chart(training_curves(history_frame(trained.history)), width="content")
    if trained.metrics is None:
        st.info("This model came from a bundle: its validation details stay with the session that trained it.")
    else:
        show_metrics(trained.metrics)
        show_gallery(trained)
    try_it(trained)
    export(trained)


def training_section(dataset: Dataset) -> None:
    st.markdown("**Held back for validation** (the same split for the same images, every time)")
    defaults = TrainConfig()
    train_items, val_items = stratified_split(dataset.items, val_fraction=defaults.val_fraction, seed=defaults.seed)
    data_table(split_frame(train_items, val_items), hide_index=True)
    chosen = settings()
    if chosen is None:
        return
    if st.button("Train", key="finetune_train", type="primary", icon=":material/school:"):
        run_training(dataset, *chosen)


def main() -> None:
    st.title("Fine-tune")
    st.caption(
        "Teach a model your own classes: bring labelled images, train a new head on an ImageNet backbone, "
        "see where it goes wrong, then use it here or take it with you."
    )
    collect_training_run()

    dataset = data_section()
    if dataset is not None:
        training_section(dataset)

    trained = st.session_state.get(MY_MODEL)
    if trained is None:
        return
    results(trained)


main()
