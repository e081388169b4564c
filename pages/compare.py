"""Compare: several models on the same images: answers, agreement, speed, size, and where they look."""

from dataclasses import replace

import pandas as pd
import streamlit as st
from PIL import Image

from core.classify.compare import Comparison, ImageComparison, compare_files
from core.classify.explain import grad_cam, grad_cam_memory_mb, overlay
from core.classify.predict import DEFAULT_TOP_K, MAX_TOP_K, Classification
from core.engines.handle import ModelHandle
from core.errors import NetworkUnavailable, ZooScopeError
from core.images import decode_image
from core.jobs.queue import JobCancelled
from core.models import bundled
from core.models.catalog import all_specs, curated_specs, weights_versions
from core.models.keys import ModelKey
from core.preprocessing import decode_side
from ui import fallback
from ui.charts import accuracy_vs_latency
from ui.confidence import WEAK_HELP, WEAK_LABEL, answer_markdown, is_weak, weak_rows
from ui.inputs import file_digest, image_inputs
from ui.jobs import in_line, light_work
from ui.loading import load_many
from ui.measures import MODEL_ALONE, int8_verdict_line
from ui.model_pool import model_pool
from ui.navigation import ensure_app, look_inside
from ui.progress import progress_bar
from ui.session import reuse
from ui.tables import data_table, share_column, top_k_table, without_idle_columns
from ui.text import counted, verbatim
from ui.weights import weights_select

ensure_app()  # first: keeps a deep link to this page on the app (ui/navigation.py)

# The classic ResNet / VGG / EfficientNet trio; where there is no network, the models that run here
# take the place of those whose weights are not on this machine (ui.fallback).
WEB_DEFAULT = ["resnet50", "vgg16", "efficientnet_b0"]
MODELS_KEY = "compare_models"
MAX_MODELS = 6
DETAILED_LIMIT = 12
EACH_OWN_TOP1 = "each model's own top-1"
PER_ROW = 3  # model answers side by side in a photo's card


def model_options() -> list[ModelKey]:
    """The catalogue, curated and bundled models first; on the CPU, also their int8 variants
    (shown as "resnet50 · int8"), so that a model and its int8 version can be compared side by side."""
    curated = [spec.name for spec in curated_specs()]
    extra = [name for name in bundled.NAMES if name not in curated]
    rest = sorted(name for name in all_specs() if name not in curated and name not in extra)
    int8 = [ModelKey(name, "int8") for name in [*curated, *extra]] if on_the_cpu() else []
    return [*map(ModelKey, [*curated, *extra]), *int8, *map(ModelKey, rest)]


def with_weights(chosen: list[ModelKey]) -> list[ModelKey]:
    """Each chosen model in the weights version picked beside it: a "Weights" select per model that has several."""
    several = [key for key in chosen if len(weights_versions(key.name)) > 1]
    if not several:
        return chosen
    columns = st.columns(min(len(several), 3))
    picked = {
        key: weights_select(
            key.name, columns[i % len(columns)], key=f"compare_weights_{key.engine or 'auto'}", label=f"Weights · {key}"
        )
        for i, key in enumerate(several)
    }
    return [replace(key, weights=picked[key]) if key in picked else key for key in chosen]


def on_the_cpu() -> bool:
    return model_pool().device.type == "cpu"


def run_comparison(models: list[ModelHandle], files: list[tuple[str, bytes]], k: int) -> Comparison:
    """Compare once per (models, files, k): widget reruns reuse this session's last answer."""

    def compute() -> Comparison:
        # Light work: never in line, and trainings pause meanwhile, so the latency measured here is the model's own.
        running = f"Running {counted(len(models), 'model')} on {counted(len(files), 'image')}…"
        with light_work(), progress_bar(running) as progress:
            return compare_files(models, files, k=k, thumbnails=True, progress=progress)

    return reuse("compare_last", (tuple(model.name for model in models), k, file_digest(tuple(files))), compute)


# Short headers and fixed widths, so that every number shows at a 1280 px window with the sidebar open;
# family (the chart's colour) and acc@5 are left out of this table.
MODEL_COLUMNS = {
    "model": st.column_config.TextColumn("model", width=170),
    "runtime": st.column_config.TextColumn(
        "runtime", width=64, help="torch: PyTorch; onnx: ONNX Runtime fp32; int8: ONNX Runtime, quantized"
    ),
    "latency_ms": st.column_config.NumberColumn("model ms, batch 1", format="%.1f", width=125, help=MODEL_ALONE),
    "agreement": share_column(
        "int8 = fp32",
        width=105,
        help="int8 rows: share of the check photos (the examples and 12 variations of each) on which its top-1 "
        "is PyTorch fp32's",
    ),
    "memory_mb": st.column_config.NumberColumn("memory (MB)", format="%.0f", width=95),
    "size_mb": st.column_config.NumberColumn("file (MB)", format="%.0f", width=70),
    "acc1": st.column_config.NumberColumn("top-1 (%)", format="%.1f", width=72, help="Published ImageNet-1K top-1"),
    "params_m": st.column_config.NumberColumn("params (M)", format="%.1f", width=82),
    "gflops": st.column_config.NumberColumn("GFLOPS", format="%.2f", width=68),
    "input_size": st.column_config.NumberColumn("input (px)", width=72),
}


def models_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The models frame as shown: agreement with fp32 only on int8 rows (an fp32 model's is 100% by
    definition), and dropped where no int8 model is compared."""
    table = without_idle_columns(
        frame.assign(agreement=frame["agreement"].where(frame["runtime"] == "int8")), empty=("agreement",)
    )
    return table[[column for column in MODEL_COLUMNS if column in table]]


def show_models(comparison: Comparison, models: list[ModelHandle]) -> None:
    st.subheader("The models")
    frame = comparison.models_frame()
    data_table(models_table(frame), hide_index=True, column_config=MODEL_COLUMNS)
    for column, model in zip(st.columns(len(models)), models, strict=True):
        with column:
            look_inside(model.spec.name)
    st.altair_chart(accuracy_vs_latency(frame), width="stretch")
    st.caption(
        "Latency is the model alone, measured here, on this machine (median of several batch-1 forwards after a "
        "warm-up; preprocessing and decoding excluded); "
        "accuracy, parameters and GFLOPS come from each model's published ImageNet-1K results. Memory is what "
        "each model holds: its PyTorch weights, or its ONNX Runtime session's; file is the file it runs from."
    )
    for model in models:
        if model.runtime == "int8":
            recommended, verdict = int8_verdict_line(model)
            if recommended:
                st.success(f"**{model.name}** · {verdict}.", icon=":material/bolt:")
            else:
                st.warning(f"**{model.name}** · {verdict}.", icon=":material/warning:")


AGREEMENT_COLUMNS = {
    "file": st.column_config.TextColumn("file", width=150),
    "top1_agree": st.column_config.CheckboxColumn("same top-1", width=80, help="Every model gives the same top-1"),
    "shared_top_k": st.column_config.NumberColumn("shared", width=62, help="Labels in every model's top-k"),
    "consensus": st.column_config.TextColumn("consensus", help="The label with the highest mean probability"),
    "consensus_probability": st.column_config.NumberColumn(
        "mean prob.", format="percent", width=85, help="The consensus label's probability, averaged over the models"
    ),
}


def agreement_line(image: ImageComparison) -> str:
    verdict = "All models agree" if image.top1_agree else "The models disagree"
    shared = ", ".join(image.shared_top_k) or "none"
    return (
        f"{verdict} · consensus **{image.consensus}** ({image.consensus_probability:.1%} mean probability) "
        f"· in every top-k: {shared}"
    )


def answer_header(name: str, result: Classification) -> str:
    """Markdown: the model, then its top-1 and probability (greyed, with a badge, when weak)."""
    top = result.top1
    line = f"{verbatim(top.label)} · {top.probability:.1%}"
    answer = answer_markdown(line, top.probability) if is_weak(top.probability) else f":primary[{line}]"
    return f"**{verbatim(name)}**  \n{answer}"


def show_image(image: ImageComparison, models: list[str]) -> None:
    with st.container(border=True):
        st.markdown(f"#### {verbatim(image.file)}")
        st.markdown(agreement_line(image))
        picture, answers = st.columns([1, 3], gap="small")
        if image.thumbnail is not None:
            picture.image(image.thumbnail, width="stretch")
        with answers:  # at most PER_ROW answers side by side: each table keeps room for its probabilities
            for start in range(0, len(models), PER_ROW):
                row = models[start : start + PER_ROW]
                for column, name in zip(st.columns(min(PER_ROW, len(models)), gap="small"), row, strict=False):
                    with column:
                        result = image.results[name]
                        st.markdown(
                            answer_header(name, result), help=WEAK_HELP if is_weak(result.top1.probability) else None
                        )
                        top_k_table(result, show_rank=False, compact=True)


def show_explanations(comparison: Comparison, models: list[ModelHandle], files: list[tuple[str, bytes]]) -> None:
    names = [image.file for image in comparison.images]
    left, right = st.columns(2)
    chosen = left.selectbox("Image", range(len(names)), format_func=lambda i: names[i], key="compare_explain_image")
    image = comparison.images[chosen]
    labels = sorted({p.label for result in image.results.values() for p in result.predictions})
    target = right.selectbox("Class", [EACH_OWN_TOP1, *labels], key="compare_explain_class")
    label = f"Grad-CAM of {image.file} on {len(models)} model{'s' if len(models) > 1 else ''}"
    data = dict(files)[image.file]

    def compute() -> list[tuple[Image.Image, str]]:
        picture = decode_image(data, min_side=decode_side(model.preprocess for model in models))
        maps = []
        with in_line("explain", label, memory_mb=grad_cam_memory_mb([model.spec for model in models])):
            for model in models:
                class_index = None if target == EACH_OWN_TOP1 else model.categories.index(target)
                with st.spinner(f"Grad-CAM for {model.name}…"):
                    explanation = grad_cam(model.torch, picture, class_index)
                computed_by = "" if model.runtime == "torch" else " · heat map from the PyTorch fp32 model"
                maps.append(
                    (
                        overlay(explanation),
                        f"{model.name}: {explanation.label} ({explanation.probability:.1%}){computed_by}",
                    )
                )
        return maps

    # Once per (models, image, class): a rerun for another widget (top-k) does not queue Grad-CAM again.
    key = (tuple(model.name for model in models), file_digest(((image.file, data),)), target)
    try:
        maps = reuse("compare_explain_last", key, compute)
    except JobCancelled:
        return  # in_line said so, with a way to start again
    for column, (heat_map, caption) in zip(st.columns(len(models)), maps, strict=True):
        column.image(heat_map, width="stretch")
        column.caption(caption)


def take_models_from_address(options: list[ModelKey]) -> None:
    """/compare?models=a,b (a link from Choose) picks those models, once: the person's changes stay theirs."""
    asked = st.query_params.get("models")
    if not asked or st.session_state.get("compare_models_from_address") == asked:
        return
    st.session_state["compare_models_from_address"] = asked
    known = {str(key): key for key in options}
    picked = [known[name] for name in (part.strip() for part in asked.split(",")) if name in known]
    if picked:
        st.session_state[MODELS_KEY] = picked[:MAX_MODELS]


def main() -> None:
    st.title("Compare")
    st.caption("Several models on the same photos: which is right, how sure, how fast, how heavy, and why.")

    options = model_options()
    take_models_from_address(options)
    fallback.prepare(MODELS_KEY)
    chosen = st.multiselect(
        "Models",
        options,
        default=fallback.default_choice(MODELS_KEY, [ModelKey(name) for name in WEB_DEFAULT]),
        format_func=str,  # a key's label: "resnet50", "resnet50 · int8"
        max_selections=MAX_MODELS,
        key=MODELS_KEY,
        help=f"Up to {MAX_MODELS}. Big models (VGG16 is 528 MB) take a while to load on a small server.",
    )
    fallback.show_note(MODELS_KEY)
    fallback.fall_back(MODELS_KEY, chosen)  # the network is already known to be out: no waiting
    chosen = with_weights(chosen)
    k = st.slider("Top-k", 1, MAX_TOP_K, DEFAULT_TOP_K, key="compare_top_k")
    files = image_inputs("compare")

    if not chosen:
        st.info("Pick at least one model to compare.")
        return
    if not files:
        st.info("Add one or more photos above to compare the models on them.")
        return

    try:
        models = load_many(chosen)
    except NetworkUnavailable as error:
        fallback.fall_back(MODELS_KEY, chosen)  # learned just now: rerun with the models that run here
        st.error(str(error), icon=":material/cloud_off:")
        return
    if not models:
        st.error("None of the chosen models could be loaded.", icon=":material/error:")
        return
    try:
        comparison = run_comparison(models, files, k)
    except ZooScopeError as error:
        st.error(str(error), icon=":material/error:")
        return

    for failure in comparison.failures:
        st.error(f"**{verbatim(failure.file)}**: {failure.error}", icon=":material/broken_image:")
    if not comparison.images:
        return

    show_models(comparison, models)
    st.subheader("Agreement")
    agreement = comparison.agreement_frame()
    data_table(weak_rows(agreement, "consensus_probability"), hide_index=True, column_config=AGREEMENT_COLUMNS)
    if agreement["consensus_probability"].map(is_weak).any():
        st.caption(f"Greyed rows: a weak consensus ({WEAK_LABEL}).", help=WEAK_HELP)
    st.download_button(
        "Download all top-k rows (CSV)",
        comparison.predictions_frame().to_csv(index=False),
        file_name="zooscope-compare.csv",
        mime="text/csv",
        key="compare_csv",
        icon=":material/download:",
    )
    # Above the photos' cards: the heat maps appear right under their toggle, not after every card.
    st.subheader("Where each model looks")
    if st.toggle("Explain: show where each model looks (Grad-CAM)", key="compare_explain"):
        show_explanations(comparison, models, files)
    names = [model.name for model in models]
    for image in comparison.images[:DETAILED_LIMIT]:
        show_image(image, names)


main()
