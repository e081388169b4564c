"""Try it: the model on new photos, with its "not sure" threshold, and the way to the Classify page."""

from __future__ import annotations

import math

import streamlit as st

from core.classify.predict import Classification, Failure
from core.errors import ZooScopeError
from core.finetune.threshold import NOT_SURE, judge, passing_share
from core.finetune.trained import TrainedModel
from core.images import SUPPORTED_TYPES
from ui.familiarity import familiarity_meaning, familiarity_slider
from ui.finetune import keys
from ui.inputs import file_digest
from ui.loading import load_with_progress
from ui.navigation import CLASSIFY
from ui.session import CLASSIFY_MODEL, MY_MODEL_OPTION, reuse
from ui.tables import top_k_table
from ui.text import verbatim
from ui.threshold import answer_line, threshold_slider

TRY_TOP_K = 5


def not_sure_setting(trained: TrainedModel) -> None:
    """The two "not sure" sliders (low confidence, unlike the training images), and what each means on the
    validation images."""
    slider, meaning = st.columns([1, 2], vertical_alignment="center")
    threshold = threshold_slider(trained, "finetune_threshold", container=slider)
    passing = ""
    if trained.metrics is not None and not math.isnan(share := passing_share(trained.metrics.outcomes, threshold)):
        passing = f"{share:.0%} of the correctly classified validation images reach it; "
    meaning.caption(f"{passing}an answer below {threshold:.0%} reads “{NOT_SURE}”.")
    slider, meaning = st.columns([1, 2], vertical_alignment="center")
    familiarity_slider(trained, "finetune_min_similarity", container=slider)
    meaning.caption(familiarity_meaning(trained))


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
        backbone = load_with_progress(trained.backbone_key)
        return trained.classify_files(backbone.torch, pairs, k, thumbnails=True, runtime=backbone.runtime)

    try:
        results = reuse(keys.TRY_RESULTS, key, classify_them)
    except ZooScopeError as error:
        st.error(str(error), icon=":material/error:")
        return
    for result in judge(results, trained.threshold, trained.familiarity):  # the sliders' values, no new forward
        if isinstance(result, Failure):
            st.error(f"**{verbatim(result.file)}**: {verbatim(result.error)}", icon=":material/broken_image:")
            continue
        show_try_result(result)


def show_try_result(result: Classification) -> None:
    with st.container(border=True):
        picture, numbers = st.columns([1, 3], gap="medium")
        if result.thumbnail is not None:
            picture.image(result.thumbnail, caption=verbatim(result.file), width="stretch")
        numbers.markdown(answer_line(result))
        top_k_table(result, show_rank=False, container=numbers)
