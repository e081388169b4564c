"""Shrink as the page runs it: the variants made in line with other visitors' heavy work, the trade
drawn and tabled, then one variant kept and shipped as files that are each verified in their runtime."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
from PIL import Image

from core.errors import ZooScopeError
from core.jobs.queue import JobCancelled
from core.preprocessing import Transform
from core.shrink.report import table
from core.shrink.run import ShrinkOptions, ShrinkResult, memory_need_mb, ship_variant, shrink
from core.shrink.source import ShrinkImages, ShrinkSource
from ui.charts import shrink_map
from ui.jobs import in_line
from ui.progress import progress_bar
from ui.session import latest, remember
from ui.tables import data_table, share_column

RESULT = "shrink_result"  # ui.session slot: the last ShrinkRun and the inputs it was made for
SHIPPED = "shrink_shipped"  # ui.session slot: the files made for one variant
FORMAT_NAMES = {"onnx": "ONNX (.onnx)", "ort": "ONNX Runtime Mobile (.ort)", "pte": "ExecuTorch, XNNPACK (.pte)"}
RUNTIME_OF = {"onnx": "ONNX Runtime", "ort": "ONNX Runtime (its mobile format)", "pte": "ExecuTorch's runtime"}
PLATFORM_NAMES = {"android": "Android (Kotlin)", "ios": "iOS (Swift)"}
# An .ort file is converted for phones' ARM CPUs, without the x86-only convolution layout: timed on this
# x86 server it runs about twice as slow as the same .onnx (core.shrink.ship), which says nothing of a phone.
ORT_NOTE = "Converted for ARM phones: its time on this x86 server is no guide to a phone's."
KEEP_WITHIN = 0.03  # the variant suggested: the fastest whose fidelity is within this of the unchanged model


@dataclass
class ShrinkRun:
    """One shrink in this session: its result, what shipping needs again, and the folder its files live in."""

    result: ShrinkResult
    holdout: list[Image.Image]
    preprocess: Transform
    folder: tempfile.TemporaryDirectory  # removed when this run is replaced and dropped


def run(key: tuple, source: ShrinkSource, images: ShrinkImages, options: ShrinkOptions) -> ShrinkRun | None:
    """Make and measure the variants, in line; the run is kept for `key` (its inputs) in the session."""
    label = f"Shrinking {source.name}"
    folder = tempfile.TemporaryDirectory(prefix="zooscope-shrink-")
    try:
        memory = memory_need_mb(source.spec.name, len(images.train))
        with in_line("shrink", label, memory_mb=memory) as job, progress_bar(label) as progress:
            result = shrink(source, images, Path(folder.name), options, progress=progress, should_stop=job.cancelled)
    except JobCancelled:
        folder.cleanup()
        return None
    except ZooScopeError as error:
        folder.cleanup()
        st.error(str(error), icon=":material/error:")
        return None
    return remember(RESULT, key, ShrinkRun(result, list(images.holdout), source.preprocess, folder))


def last_run() -> ShrinkRun | None:
    return latest(RESULT)


def show_trade(shrunk: ShrinkRun) -> None:
    """The chart (fidelity against latency, size as the area) and the table, each variant's notes below."""
    result = shrunk.result
    frame = table(result)
    what = "accuracy on your validation images" if result.fidelity_kind == "accuracy" else "top-1 agreement with fp32"
    st.caption(f"{result.source}: {result.images}. Fidelity is {what}; latency is batch 1, measured here.")
    kinds = {variant.name: variant.kind for variant in result.variants}
    st.altair_chart(shrink_map(frame.assign(kind=frame["variant"].map(kinds)), result.fidelity_kind), width="stretch")
    data_table(
        frame,
        hide_index=True,
        column_config={
            "params (M)": st.column_config.NumberColumn(format="%.2f"),
            "GFLOPS": st.column_config.NumberColumn(format="%.3f"),
            "size (MB)": st.column_config.NumberColumn(format="%.1f"),
            "zipped (MB)": st.column_config.NumberColumn(format="%.1f", help="what a download costs"),
            "latency 1 thread (ms)": st.column_config.NumberColumn(format="%.1f"),
            "latency all threads (ms)": st.column_config.NumberColumn(format="%.1f"),
            "× latency": st.column_config.NumberColumn(format="%.2f", help="against the unchanged model"),
            "× params": st.column_config.NumberColumn(format="%.2f"),
            result.fidelity_kind: share_column(),
            "Δ " + result.fidelity_kind: st.column_config.NumberColumn(format="%+.3f"),
        },
    )
    for line in result.refused:
        st.warning(f"Not made: {line}", icon=":material/block:")
    with st.expander("How each variant was made"):
        for variant in result.variants:
            st.markdown(f"**{variant.name}**: " + "; ".join(variant.notes))


def suggested(result: ShrinkResult) -> str:
    """The fastest variant whose fidelity is within KEEP_WITHIN of the unchanged model's."""
    base = result.variants[0]
    close = [v for v in result.variants if v.fidelity >= base.fidelity - KEEP_WITHIN and v.kind != "zeros"]
    return min(close or [base], key=lambda variant: variant.latency_ms).name


def ship_section(shrunk: ShrinkRun, pte_ready: bool) -> None:
    """Keep one variant: its files made, each verified in its own runtime, downloads and app snippets."""
    from core.shrink.snippets import SNIPPETS, snippet

    result = shrunk.result
    names = [variant.name for variant in result.variants]
    keep = st.selectbox(
        "Keep", names, index=names.index(suggested(result)), key="shrink_keep",
        help=f"Suggested: the fastest within {KEEP_WITHIN:.0%} of the unchanged model's fidelity.",
    )  # fmt: skip
    offered = list(FORMAT_NAMES) if pte_ready else ["onnx", "ort"]
    formats = st.multiselect(
        "Files", offered, default=["onnx", "ort"], format_func=lambda fmt: FORMAT_NAMES[fmt], key="shrink_formats"
    )
    if not pte_ready:
        st.caption("ExecuTorch is not installed here: `pip install -r requirements-shrink.txt` adds the .pte format.")
    key = (id(shrunk), keep, tuple(formats))
    if st.button("Make and verify the files", key="shrink_ship", icon=":material/package_2:", disabled=not formats):
        try:
            with in_line("ship", f"Writing {keep}", memory_mb=256), st.spinner(f"Writing {keep}…"):
                files = ship_variant(
                    result, keep, formats, Path(shrunk.folder.name) / "files",
                    holdout=shrunk.holdout, preprocess=shrunk.preprocess,
                )  # fmt: skip
            remember(SHIPPED, key, files)
        except JobCancelled:
            return
        except ZooScopeError as error:
            st.error(str(error), icon=":material/error:")
            return
    answer = st.session_state.get(SHIPPED)
    if answer is None or answer.key != key:
        return
    for fmt, verified in answer.value.items():
        with st.container(border=True):
            st.markdown(f"**{FORMAT_NAMES[fmt]}**: {verified.size_mb:.1f} MB")
            st.caption(
                f"Run in {RUNTIME_OF[fmt]}: the same top-1 as {keep} measured here on {verified.same_top1} of "
                f"{verified.images} held-out images ({verified.agreement:.0%}); {verified.latency_ms:.1f} ms at "
                "batch 1." + (f" {ORT_NOTE}" if fmt == "ort" else "")
            )
            st.download_button(
                f"Download {verified.path.name}", data=verified.path.read_bytes(), file_name=verified.path.name,
                key=f"shrink_download_{fmt}", icon=":material/download:",
            )  # fmt: skip
            if fmt in SNIPPETS:
                tabs = st.tabs([PLATFORM_NAMES.get(platform, platform) for platform in SNIPPETS[fmt]])
                for tab, platform in zip(tabs, SNIPPETS[fmt], strict=True):
                    language = "kotlin" if platform == "android" else "swift"
                    tab.code(
                        snippet(fmt, platform, input_size=result.input_size, mean=result.mean, std=result.std),
                        language=language,
                    )
