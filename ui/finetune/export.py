"""Export: the model bundle, and ONNX models (fp32 and int8) with their measured agreement (heavy work:
it waits its turn in the job queue)."""

from __future__ import annotations

import streamlit as st

from core.errors import ZooScopeError
from core.finetune.bundle import export_bundle, preprocessing
from core.finetune.deploy import deploy_images, describe, export_onnx_models
from core.finetune.footprint import export_memory_mb
from core.finetune.trained import TrainedModel
from core.jobs.queue import JobCancelled
from core.runtime import INT8_AGREEMENT_GOAL, int8_verdict
from ui.finetune import keys
from ui.finetune.data import last_dataset
from ui.jobs import in_line
from ui.loading import load_with_progress
from ui.measures import verdict_headline
from ui.progress import progress_bar
from ui.session import recall, remember, reuse


def export(trained: TrainedModel) -> None:
    st.subheader("Export")
    stem = f"zooscope-{trained.backbone}-{len(trained.classes)}classes"
    bundle, onnx = st.columns(2, gap="large")
    with bundle:
        try:
            minimum = trained.familiarity.min_similarity if trained.familiarity is not None else None
            data = reuse(keys.BUNDLE, (trained, trained.threshold, minimum), lambda: export_bundle(trained))
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
        steps = preprocessing(trained.backbone_spec)
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
        label = f"Exporting {trained.backbone} and its head to ONNX (fp32 and int8)"
        try:
            with (
                in_line("export", label, memory_mb=export_memory_mb(trained.backbone)),
                progress_bar("Exporting the whole model (backbone and head) to ONNX…") as progress,
            ):
                loaded = load_with_progress(trained.backbone_key).torch
                images = deploy_images(trained, last_dataset())
                exports = export_onnx_models(trained, loaded, images, progress=progress)
        except JobCancelled:
            st.warning("The server took this export out of the line (the session closed).", icon=":material/warning:")
        except Exception as error:  # noqa: BLE001 - the exporter fails in many ways; say so, keep the page
            st.error(f"The ONNX export failed: {error}", icon=":material/error:")
        else:
            remember(keys.ONNX, trained, exports)
    prepared = recall(keys.ONNX, trained)  # a TrainedModel compares by identity: these exports are this model's
    if prepared is None:
        return
    for export in prepared:
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
            recommended, reason = int8_verdict(export.agreement, export.ms, export.reference_ms)
            reason = reason.replace("the check images", "these images")
            faithful = export.agreement >= INT8_AGREEMENT_GOAL
            verdict = f"int8: {verdict_headline(export.ms < export.reference_ms, faithful)}: {reason}."
            if recommended:
                st.success(verdict, icon=":material/bolt:")
            else:
                st.warning(verdict, icon=":material/warning:")
