"""Fine-tune: teach a model your own classes, watch it learn, see its mistakes, then use and export it."""

import math
from collections.abc import Callable

import streamlit as st
from streamlit.runtime.uploaded_file_manager import UploadedFile

from core.classify.predict import Classification, Failure
from core.datasets.labelled import Dataset, dataset_from_uploads, dataset_from_zip, split_frame, stratified_split
from core.errors import ZooScopeError
from core.finetune.bundle import export_bundle, preprocessing
from core.finetune.config import MODE_DEFAULTS, MODES, TrainConfig
from core.finetune.deploy import deploy_images, describe, export_onnx_models
from core.finetune.depth import DEPTH_LABELS, DEPTHS
from core.finetune.estimate import measure_costs
from core.finetune.examples import EXAMPLE_DESCRIPTION, example_dataset
from core.finetune.heads import HEAD_TYPES
from core.finetune.lr_find import find_lr
from core.finetune.threshold import NOT_SURE, passing_share, with_threshold
from core.finetune.train import train
from core.finetune.trained import TrainedModel
from core.images import SUPPORTED_TYPES
from core.models import bundled, weights
from core.models.catalog import ModelSpec, all_specs, curated_specs
from core.models.keys import ModelKey
from core.progress import Progress
from core.runtime import int8_verdict
from ui.charts import lr_finder as lr_finder_chart
from ui.charts import training_curves
from ui.finetune_views import (
    LiveTraining,
    TrainingRun,
    dataset_previews,
    estimates_frame,
    feature_cache,
    history_frame,
    runs_frame,
    show_dataset,
    show_gallery,
    show_metrics,
    show_summary,
)
from ui.inputs import file_digest
from ui.loading import load_with_progress
from ui.model_pool import model_pool
from ui.navigation import CLASSIFY, ensure_app
from ui.progress import progress_bar
from ui.session import CLASSIFY_MODEL, MY_MODEL, MY_MODEL_OPTION, reuse
from ui.tables import data_table, share_column, top_k_table
from ui.text import verbatim
from ui.threshold import answer_line, threshold_slider

ensure_app()  # first: keeps a deep link to this page on the app (ui/navigation.py)

EXAMPLE_KEY = "finetune_example"  # True once "Try an example dataset" was clicked (until the person brings data)
RUN_KEY = "finetune_run"  # a ui.finetune_views.TrainingRun: the training in progress, or one a click interrupted
RUNS_KEY = "finetune_runs"  # [(run number, TrainedModel)] of this session, oldest first
RUN_PICK_KEY = "finetune_run_pick"
LR_FINDING_KEY = "finetune_lr_finding"
MAX_RUNS = 8
RUNS_MEMORY = 256 << 20  # bytes of trained copies the runs table may hold
MODE_LABELS = {
    "fast": "Fast: the head alone, on frozen features computed once (seconds)",
    "finetune": "Fine-tune: the head first, then more of the network, on augmented images (minutes)",
}
LR_OPTIONS = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
WEIGHT_DECAYS = [0.0, 1e-5, 1e-4, 1e-3, 1e-2, 0.05, 0.1]
TRAIN_SIZES = (192, 160, 128, 96)
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
    # Each mode's own defaults (fine-tuning: fewer epochs, weight decay and label smoothing as timm uses them).
    for name, value in MODE_DEFAULTS[st.session_state["finetune_mode"]].items():
        st.session_state[f"finetune_{name}"] = value


def training_sizes(spec: ModelSpec) -> list[int | None]:
    """None (the model's own, the default) first, then the lower ones it takes."""
    return [None, *(size for size in TRAIN_SIZES if size < spec.input_size)]


def finetune_settings(spec: ModelSpec, columns) -> dict:
    """Fine-tune mode's own settings: batch norm, flips, the training resolution."""
    left, middle, right = columns
    adapt = left.checkbox(
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


def settings(dataset: Dataset) -> tuple[str, TrainConfig] | None:
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
    for name, value in MODE_DEFAULTS[mode_name].items():
        st.session_state.setdefault(f"finetune_{name}", value)
    finetune = mode_name == "finetune"
    unfreeze = depth_choice() if finetune else TrainConfig().unfreeze
    estimates = st.empty()
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
            key="finetune_patience",
            help="Stop after this many epochs without a lower validation loss",
        )
        lr = middle.select_slider(
            "Learning rate",
            LR_OPTIONS,
            1e-3,
            format_func="{:g}".format,
            key="finetune_lr",
            help="The head's; in fine-tune mode, earlier layers train at lower rates (shares of this one).",
        )
        batch_size = middle.select_slider("Batch size", [8, 16, 32, 64, 128], 32, key="finetune_batch_size")
        weight_decay = right.select_slider(
            "Weight decay", WEIGHT_DECAYS, format_func="{:g}".format, key="finetune_weight_decay"
        )
        smoothing = right.slider("Label smoothing", 0.0, 0.3, step=0.05, key="finetune_label_smoothing")
        extra = finetune_settings(specs[backbone], st.columns(3)) if finetune else {}
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
                **extra,
            )
        except ZooScopeError as error:
            st.error(str(error), icon=":material/error:")
            return None
        lr_finder(dataset, backbone, config)
    if finetune:
        with estimates.container():
            time_estimates(dataset, backbone, config)
    return backbone, config


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


def time_estimates(dataset: Dataset, backbone: str, config: TrainConfig) -> None:
    """About how long each choice takes here: one batch of these images timed on this machine, once."""
    spec = all_specs()[backbone]
    if ModelKey(backbone) not in model_pool().loaded() and not weights.is_available(spec):
        st.caption(f"Times appear here once {backbone}'s weights are on this machine (they download when you train).")
        return
    try:
        loaded = load_with_progress(ModelKey(backbone)).torch
        key = (id(dataset), backbone, config.train_size, config.flip, config.adapt_batchnorm, config.head)

        def measure():
            with progress_bar("Timing one batch for each choice…") as progress:
                return measure_costs(loaded, dataset.items, config, progress=progress)

        costs = reuse("finetune_costs", key, measure)
    except ZooScopeError as error:
        st.caption(verbatim(str(error)))
        return
    train_items, val_items = stratified_split(dataset.items, val_fraction=config.val_fraction, seed=config.seed)
    cache = feature_cache()
    uncached = sum((backbone, item.digest) not in cache for item in dataset.items)
    data_table(
        estimates_frame(costs, config, len(train_items), len(val_items), uncached=uncached),
        hide_index=True,
        key="finetune_estimates",
    )
    st.caption("Each time is measured on one batch of your images on this machine; early stopping can make it shorter.")


def lr_finder(dataset: Dataset, backbone: str, config: TrainConfig) -> None:
    """fastai's lr_find on the head: loss against learning rate, and a rate to use."""
    key = (id(dataset), backbone, config.head, config.batch_size, config.weight_decay, config.label_smoothing)
    if st.button(
        "Find a learning rate",
        key="finetune_find_lr",
        icon=":material/query_stats:",
        help="Trains a fresh head for a moment at growing learning rates on the frozen features and plots the loss.",
    ):
        try:
            loaded = load_with_progress(ModelKey(backbone)).torch
            with progress_bar("Trying learning rates…") as progress:
                finding = find_lr(loaded, dataset, config, cache=feature_cache(), progress=progress)
        except ZooScopeError as error:
            st.error(verbatim(str(error)), icon=":material/error:")
            return
        st.session_state[LR_FINDING_KEY] = (key, finding)
    stored = st.session_state.get(LR_FINDING_KEY)
    if stored is None or stored[0] != key:
        return
    finding = stored[1]
    nearest = min(LR_OPTIONS, key=lambda option: abs(math.log(option) - math.log(finding.suggestion)))
    st.altair_chart(lr_finder_chart(finding.frame, finding.suggestion), width="content")
    st.caption(
        f"Suggested: {finding.suggestion:.1e}, a tenth of the rate where the loss was lowest (fastai's rule); "
        "past that the loss climbs."
    )
    st.button(
        f"Use {nearest:g}",
        key="finetune_use_lr",
        on_click=lambda: st.session_state.update(finetune_lr=nearest),
        disabled=config.lr == nearest,
    )


def stop_clicked() -> None:
    # Runs at the start of the run that the click started (the training run is being stopped meanwhile).
    if run := st.session_state.get(RUN_KEY):
        run.stop_clicked = True


def train_live(dataset: Dataset, backbone: str, config: TrainConfig, run: TrainingRun) -> TrainedModel | None:
    """Train with progress bars and a live chart; None (with the reason on screen) if it cannot."""
    try:
        handle = load_with_progress(ModelKey(backbone))
    except ZooScopeError as error:
        st.error(str(error), icon=":material/cloud_off:")
        return None
    live = LiveTraining(config, backbone=backbone)
    try:
        return train(
            handle.torch,
            dataset,
            config,
            cache=feature_cache(),
            progress=live.progress,
            on_epoch=live.on_epoch,
            on_interrupt=run.keep,
            runtime=handle.runtime,
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
    add_run(trained)
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
        add_run(kept)
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

    def classify_them() -> list[Classification | Failure]:
        backbone = load_with_progress(ModelKey(trained.backbone))
        return trained.classify_files(backbone.torch, pairs, k, thumbnails=True, runtime=backbone.runtime)

    try:
        results = reuse("finetune_try_last", key, classify_them)
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
        onnx_downloads(trained, stem)
        steps = preprocessing(all_specs()[trained.backbone])
        st.caption(
            f"Input `image`: float32 (N, 3, {steps['crop']}, {steps['crop']}), an RGB photo resized to "
            f"{steps['resize']} ({steps['interpolation']}), centre-cropped to {steps['crop']}, scaled to 0-1 and "
            f"normalised with mean {steps['mean']} and std {steps['std']}. "
            f"Output `logits` (N, {len(trained.classes)}); "
            "the class names are in the model's metadata (`classes`)."
        )


def onnx_downloads(trained: TrainedModel, stem: str) -> None:
    """fp32 and int8 ONNX files on request, each with its measured agreement (core.finetune.deploy)."""
    if st.button("Prepare the ONNX models (fp32 and int8)", key="finetune_prepare_onnx", icon=":material/build:"):
        previous = st.session_state.get("finetune_dataset")
        try:
            with progress_bar("Exporting the whole model (backbone and head) to ONNX…") as progress:
                loaded = load_with_progress(ModelKey(trained.backbone)).torch
                images = deploy_images(trained, previous[1] if previous else None)
                exports = export_onnx_models(trained, loaded, images, progress=progress)
        except Exception as error:  # noqa: BLE001 - the exporter fails in many ways; say so, keep the page
            st.error(f"The ONNX export failed: {error}", icon=":material/error:")
        else:
            st.session_state["finetune_onnx"] = (trained, exports)
    prepared = st.session_state.get("finetune_onnx")
    if prepared is None or prepared[0] is not trained:
        return
    for export in prepared[1]:
        int8 = export.kind == "int8"
        st.download_button(
            f"Download the {export.kind} ONNX model",
            export.data,
            file_name=f"{stem}{'-int8' if int8 else ''}.onnx",
            mime="application/octet-stream",
            key=f"finetune_download_onnx{'_int8' if int8 else ''}",
            on_click="ignore",
            icon=":material/download:",
        )
        st.caption(describe(export))
        if int8:
            fast, reason = int8_verdict(export.agreement, export.ms, export.reference_ms)
            reason = reason.replace("the check images", "these images")
            if fast:
                st.success(f"int8 is the fast choice here: {reason}.", icon=":material/bolt:")
            else:
                st.warning(f"int8 is not the fast choice here: {reason}.", icon=":material/warning:")


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


def add_run(trained: TrainedModel) -> None:
    """A finished (or stopped) run joins the runs table and becomes the model to try, use and export."""
    runs = st.session_state.setdefault(RUNS_KEY, [])
    number = runs[-1][0] + 1 if runs else 1
    runs.append((number, trained))
    # Each run holds its own trained copies: the oldest go first to keep the session's memory bounded.
    while len(runs) > 1 and (len(runs) > MAX_RUNS or sum(t.trained_params for _, t in runs) * 4 > RUNS_MEMORY):
        del runs[0]
    st.session_state[MY_MODEL] = trained
    st.session_state[RUN_PICK_KEY] = number


def run_picked() -> None:
    number = st.session_state[RUN_PICK_KEY]
    for run_number, trained in st.session_state.get(RUNS_KEY, []):
        if run_number == number:
            st.session_state[MY_MODEL] = trained


def runs_section() -> None:
    """Every run of this session side by side; any of them can be the model to try, use and export."""
    runs = st.session_state.get(RUNS_KEY) or []
    if not runs:
        return
    st.subheader("Runs in this session")
    data_table(
        runs_frame(runs),
        hide_index=True,
        column_config={
            "learning rate": st.column_config.NumberColumn(format="%g"),
            "validation accuracy": share_column(help="On the held-back validation images, at the kept epoch"),
            "seconds": st.column_config.NumberColumn(format="%.1f", help="The whole training, features included"),
        },
        key="finetune_runs_table",
    )
    current = st.session_state.get(MY_MODEL)
    numbers = [number for number, _ in runs]
    picked = next((number for number, trained in runs if trained is current), None)
    st.session_state[RUN_PICK_KEY] = picked
    labels = {number: f"Run {number}: {trained.backbone}, {trained.config.mode}" for number, trained in runs}
    st.selectbox(
        "The model to try, use on Classify and export",
        numbers,
        format_func=labels.get,
        key=RUN_PICK_KEY,
        on_change=run_picked,
        placeholder="A model imported on the Classify page (not one of these runs)",
    )


def training_section(dataset: Dataset) -> None:
    st.markdown("**Held back for validation** (the same split for the same images, every time)")
    defaults = TrainConfig()
    train_items, val_items = stratified_split(dataset.items, val_fraction=defaults.val_fraction, seed=defaults.seed)
    data_table(split_frame(train_items, val_items), hide_index=True)
    chosen = settings(dataset)
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

    runs_section()
    trained = st.session_state.get(MY_MODEL)
    if trained is None:
        return
    results(trained)


main()
