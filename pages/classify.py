"""Classify: one photo or many through one model, top-k with a chart, latency and a CSV."""

import streamlit as st

from core import runtime
from core.classify.classifier import Classifier
from core.classify.predict import (
    DEFAULT_TOP_K,
    MAX_TOP_K,
    Classification,
    Failure,
    classify_files,
    predictions_frame,
    summary_frame,
    top_k_frame,
)
from core.engines.handle import ModelHandle
from core.errors import NetworkUnavailable, ZooScopeError
from core.finetune.bundle import import_bundle
from core.finetune.threshold import answers, judge, predictions_with_threshold
from core.finetune.trained import TrainedClassifier
from core.jobs.queue import JobCancelled
from core.models import weights
from core.models.catalog import OFFLINE_DEFAULT, ModelSpec, curated_specs
from core.models.keys import ModelKey
from ui import fallback
from ui.charts import top_k_bars
from ui.confidence import WEAK_HELP, WEAK_LABEL, answer_markdown, is_weak, weak_rows
from ui.familiarity import familiarity_slider
from ui.finetune.history import add_imported_run
from ui.inputs import file_digest, image_inputs
from ui.jobs import light_work
from ui.loading import backbone_for_bundle, load_with_progress
from ui.measures import WITH_PREPROCESSING, int8_verdict_line, per_photo_latency
from ui.model_pool import model_pool
from ui.navigation import ensure_app
from ui.progress import progress_bar
from ui.session import CLASSIFY_MODEL, MY_MODEL, MY_MODEL_OPTION, reuse
from ui.tables import data_table, share_column, top_k_table, without_idle_columns
from ui.text import counted, verbatim
from ui.threshold import answer_line, threshold_slider
from ui.weights import weights_select

ensure_app()  # first: keeps a deep link to this page on the app (ui/navigation.py)

DETAILED_LIMIT = 24  # per-image cards beyond this would bury the page; the table and CSV hold all


def model_label(spec: ModelSpec) -> str:
    offline = "" if weights.is_available(spec) else " · downloads on first use"
    return f"{spec.name} · {spec.acc1:.1f}% top-1 · {spec.file_size_mb:.0f} MB{offline}"


def default_index(specs: list[ModelSpec]) -> int:
    """The bundled offline model, unless a curated torchvision model is already on disk."""
    names = [spec.name for spec in specs]
    available = [spec.name for spec in specs if spec.source == "torchvision" and weights.is_available(spec)]
    return names.index(available[0] if available else OFFLINE_DEFAULT)


def chosen_model(choice: str, engine: str | None, weights: str | None = None) -> Classifier:
    """The catalogue model (in `engine`: None for the server's runtime, or "int8"; in its `weights` version,
    None for the default), or this session's fine-tuned model on top of its shared backbone."""
    if choice == MY_MODEL_OPTION:
        trained = st.session_state[MY_MODEL]
        backbone = load_with_progress(trained.backbone_key)
        return trained.classifier(backbone.torch, runtime=backbone.runtime)
    return load_with_progress(ModelKey(choice, engine, weights))


def on_the_cpu() -> bool:
    return model_pool().device.type == "cpu"


def int8_toggle(name: str, container) -> str | None:
    """One click from a catalogue model to its int8 variant ("resnet50 · int8"), on the CPU: "int8", or None
    for the server's runtime."""
    if name == MY_MODEL_OPTION or not on_the_cpu():
        return None
    int8 = container.toggle(
        "int8: quantized by ONNX Runtime",
        key="classify_int8",
        help="A quarter of the size and often faster. Its top-1 agreement with fp32 on the check photos and its "
        "speed are measured the first time it is chosen (quantizing takes a few seconds to a minute) and shown here.",
    )
    return "int8" if int8 else None


def runtime_summary(model: ModelHandle) -> tuple[str, bool | None]:
    """One sentence on what runs `model` and what was measured about it, and whether its int8 variant is
    recommended (None where that does not apply)."""
    label = runtime.ENGINE_LABELS[model.runtime]
    if model.runtime == "torch":
        return f"Runs in {label}." + (f" {model.note}" if model.note else ""), None
    if model.runtime == "onnx":
        report = model.report
        return (
            f"Runs in {label}: its export gives PyTorch's top-1 on all {report['images']} check photos, "
            f"probabilities within {report['max_difference']:.0e}.",
            None,
        )
    report = model.report
    recommended, verdict = int8_verdict_line(model)
    fp32_mb = report["fp32_bytes"] / 2**20
    return (
        f"Runs in {label}: same top-1 as fp32 on {report['same_top1']} of {report['images']} check photos "
        f"({model.agreement:.1%}); model alone (one forward, batch 1, no preprocessing): {report['int8_ms']:.1f} ms "
        f"against {report['fp32_ms']:.1f} ms for fp32 in ONNX Runtime, measured here; {model.file_size_mb:.1f} MB "
        f"against {fp32_mb:.1f} MB. {verdict}.",
        recommended,
    )


def show_runtime(key: ModelKey) -> None:
    text, fast = runtime_summary(load_with_progress(key))  # already loaded: the pool's model
    if fast is False:
        st.warning(text, icon=":material/warning:")
    else:
        st.caption(text)


def classify(
    choice: str, engine: str | None, files: list[tuple[str, bytes]], k: int, weights: str | None = None
) -> list[Classification | Failure]:
    """Classify once per (model, weights, engine, files, k): widget reruns reuse this session's last answer."""
    trained = st.session_state.get(MY_MODEL) if choice == MY_MODEL_OPTION else None

    def compute() -> list[Classification | Failure]:
        model = chosen_model(choice, engine, weights)
        with light_work(), progress_bar(f"Classifying {counted(len(files), 'image')} with {model.name}…") as progress:
            if isinstance(model, TrainedClassifier):  # also says how alike each photo is to its training images
                return model.classify_files(files, k=k, thumbnails=True, progress=progress)
            return classify_files(model, files, k=k, thumbnails=True, progress=progress)

    return reuse("classify_last", (choice, weights, engine, id(trained), k, file_digest(tuple(files))), compute)


def import_bundle_upload() -> None:
    """A bundle exported by the Fine-tune page becomes this session's "my model" (and is selected)."""
    with st.expander("Use a fine-tuned model: upload a bundle exported by the Fine-tune page"):
        bundle = st.file_uploader("Model bundle (.zip)", type=["zip"], key="classify_bundle")
        if bundle is None:
            return
        digest = file_digest(((bundle.name, bundle.getvalue()),))
        if st.session_state.get("classify_bundle_digest") != digest:
            try:
                trained = import_bundle(bundle.getvalue(), loaded_for=backbone_for_bundle)
            except JobCancelled:
                return  # the backbone's first export was cancelled: in_line said so
            except ZooScopeError as error:
                st.error(f"**{verbatim(bundle.name)}**: {error}", icon=":material/error:")
                return
            add_imported_run(trained, bundle.name)  # a run of its own on Fine-tune, and this session's "my model"
            st.session_state["classify_bundle_digest"] = digest
            st.session_state[CLASSIFY_MODEL] = MY_MODEL_OPTION  # select it (the selectbox is drawn after this)
        trained = st.session_state[MY_MODEL]
        classes = ", ".join(verbatim(name) for name in trained.classes)
        st.success(f"Loaded {verbatim(trained.name)}: classes {classes}.", icon=":material/check_circle:")


def show_result(result: Classification, device: str) -> None:
    with st.container(border=True):
        picture, numbers = st.columns([1, 2], gap="medium")
        if result.thumbnail is not None:
            picture.image(result.thumbnail, caption=result.file, width="stretch")
        with numbers:
            weak = is_weak(result.top1.probability)
            st.markdown(answer_markdown(answer_line(result), result.top1.probability), help=WEAK_HELP if weak else None)
            st.altair_chart(top_k_bars(top_k_frame(result)), width="stretch")
            top_k_table(result)
            st.caption(per_photo_latency(result.latency_ms, result.batch_size, device), help=WITH_PREPROCESSING)


def main() -> None:
    st.title("Classify")
    st.caption(
        "Upload photos, take one with the camera, or try an example: every image gets the model's top-k at once."
    )

    specs = {spec.name: spec for spec in curated_specs()}
    settings = st.container()  # drawn above the bundle import, filled after it (it may select "my model")
    import_bundle_upload()
    trained = st.session_state.get(MY_MODEL)
    options = [*([MY_MODEL_OPTION] if trained else []), *specs]
    settings_model, settings_k = settings.columns([3, 1])
    fallback.prepare(CLASSIFY_MODEL)
    choice = settings_model.selectbox(
        "Model",
        options,
        index=options.index(MY_MODEL_OPTION) if trained else default_index(list(specs.values())),
        format_func=lambda name: trained.name if trained and name == MY_MODEL_OPTION else model_label(specs[name]),
        key=CLASSIFY_MODEL,
    )
    k = settings_k.slider("Top-k", 1, MAX_TOP_K, DEFAULT_TOP_K, key="classify_top_k")
    catalogue_model = choice != MY_MODEL_OPTION  # a fine-tuned model needs its own backbone: no stand-in
    with settings:
        fallback.show_note(CLASSIFY_MODEL)
    if catalogue_model:
        fallback.fall_back(CLASSIFY_MODEL, [choice], single=True)  # no network known: no waiting
    mine = None if catalogue_model else trained
    if mine is not None:
        threshold_slider(mine, "classify_threshold", container=settings)
        familiarity_slider(mine, "classify_min_similarity", container=settings)
    version = weights_select(choice, settings_model, key="classify_weights") if catalogue_model else None
    engine = int8_toggle(choice, settings_model)  # None (the server's runtime) or "int8"
    files = image_inputs("classify")

    if not files:
        st.info("Add one or more photos above to classify them.")
        return

    try:
        results = classify(choice, engine, files, k, weights=version)
    except NetworkUnavailable as error:
        if catalogue_model:
            fallback.fall_back(CLASSIFY_MODEL, [choice], single=True)  # learned just now: rerun with a stand-in
        st.error(str(error), icon=":material/cloud_off:")
        return
    except JobCancelled:
        return  # its first export was cancelled: in_line said so, with a way to start again
    except ZooScopeError as error:
        st.error(str(error), icon=":material/error:")
        return

    if mine is not None:  # judged at the sliders' values, without classifying again
        results = judge(results, mine.threshold, mine.familiarity)
    device = model_pool().device.type.upper()
    if catalogue_model:
        show_runtime(ModelKey(choice, engine, version))
    for failure in (r for r in results if isinstance(r, Failure)):
        st.error(f"**{verbatim(failure.file)}**: {failure.error}", icon=":material/broken_image:")

    classified = [r for r in results if isinstance(r, Classification)]
    if classified:
        if len(results) > 1:
            st.subheader(f"{len(classified)} of {counted(len(results), 'image')} classified")
            summary = without_idle_columns(summary_frame(results), empty=("error",), constant=("latency_ms",))
            if mine is not None:
                summary.insert(1, "answer", answers(results))
            data_table(
                weak_rows(summary, "confidence"),
                hide_index=True,
                column_config={
                    "confidence": share_column(),
                    "latency_ms": st.column_config.NumberColumn(
                        "ms per photo, with preprocessing", format="%.1f", help=WITH_PREPROCESSING
                    ),
                },
            )
            if summary["confidence"].map(is_weak).any():
                st.caption(f"Greyed rows are weak answers ({WEAK_LABEL}).", help=WEAK_HELP)
        rows = predictions_frame(results) if mine is None else predictions_with_threshold(results, mine.threshold)
        st.download_button(
            "Download all top-k rows (CSV)",
            rows.to_csv(index=False),
            file_name=f"zooscope-{ModelKey(choice, engine, version).slug if catalogue_model else choice}-top{k}.csv",
            mime="text/csv",
            key="classify_csv",
            icon=":material/download:",
        )
        for result in classified[:DETAILED_LIMIT]:
            show_result(result, device)
        if len(classified) > DETAILED_LIMIT:
            st.caption(f"Showing the first {DETAILED_LIMIT} images; the table and the CSV hold all {len(classified)}.")


main()
