"""Models: the whole catalogue as one sortable table and an accuracy-against-compute chart."""

import pandas as pd
import streamlit as st

from core.models import weights
from core.models.catalog import all_specs
from ui.charts import accuracy_vs_gflops
from ui.navigation import CHOOSE, ensure_app, link_to, look_inside
from ui.tables import data_table
from ui.text import verbatim
from ui.weights import versions_table

ensure_app()  # first: keeps a deep link to this page on the app (ui/navigation.py)

SEARCHED = ("name", "family", "weights")  # the columns the text filter looks in

# Widths in pixels: the longest names ("regnet_y_128gf", "mobilenet_v3_small") in full, and every
# number in view at a 1280 px window with the sidebar open.
COLUMN_CONFIG = {
    "name": st.column_config.TextColumn("model", width=150),
    "family": st.column_config.TextColumn("family", width=105),
    "acc1": st.column_config.NumberColumn("top-1 (%)", format="%.1f", width=68, help="ImageNet-1K validation top-1"),
    "acc5": st.column_config.NumberColumn("top-5 (%)", format="%.1f", width=68, help="ImageNet-1K validation top-5"),
    "params_m": st.column_config.NumberColumn("params (M)", format="%.1f", width=78, help="Parameters, in millions"),
    "gflops": st.column_config.NumberColumn(
        "GFLOPS", format="%.2f", width=68, help="Multiply-adds per image at the input size"
    ),
    "size_mb": st.column_config.NumberColumn("file (MB)", format="%.1f", width=68, help="Size of the weights file"),
    "input_size": st.column_config.NumberColumn(
        "input (px)", format="%d", width=68, help="Centre-crop size the model sees"
    ),
    "available": st.column_config.CheckboxColumn(
        "offline", width=56, help="Weights already on this machine: no download"
    ),
    "source": st.column_config.TextColumn("source", width=80),
    "weights": st.column_config.TextColumn("weights", width=120),
}
COLUMNS = list(COLUMN_CONFIG)
# What the table shows: source and input size stay in the frame (and Inside), out of the way of the numbers.
SHOWN = [column for column in COLUMNS if column not in ("source", "input_size")]


def catalogue_frame() -> pd.DataFrame:
    """One row per catalogue model, plus whether its weights are on this machine (cheap: no hashing)."""
    rows = [
        {**spec.row(), "available": weights.is_available(spec), "source": spec.source} for spec in all_specs().values()
    ]
    return pd.DataFrame(rows, columns=COLUMNS).sort_values("name", ignore_index=True)


def filter_catalogue(frame: pd.DataFrame, families: list[str], text: str, only_available: bool) -> pd.DataFrame:
    """Rows in any of `families` (none = all), containing `text` in a searched column, optionally offline only."""
    keep = pd.Series(True, index=frame.index)
    if families:
        keep &= frame["family"].isin(families)
    if needle := text.strip():
        matches = [frame[column].str.contains(needle, case=False, regex=False) for column in SEARCHED]
        keep &= pd.concat(matches, axis=1).any(axis=1)
    if only_available:
        keep &= frame["available"]
    return frame[keep].reset_index(drop=True)


def within_limits(
    frame: pd.DataFrame,
    *,
    min_acc1: float | None = None,
    max_size_mb: float | None = None,
    max_params_m: float | None = None,
) -> pd.DataFrame:
    """Rows with a top-1 of at least `min_acc1` %, a weights file of at most `max_size_mb` and at most
    `max_params_m` million parameters (None: no limit)."""
    keep = pd.Series(True, index=frame.index)
    if min_acc1:
        keep &= frame["acc1"] >= min_acc1
    if max_size_mb is not None:
        keep &= frame["size_mb"] <= max_size_mb
    if max_params_m is not None:
        keep &= frame["params_m"] <= max_params_m
    return frame[keep].reset_index(drop=True)


def smallest_line(frame: pd.DataFrame) -> str:
    """Markdown: the model with the smallest weights file among `frame`'s rows, and its numbers."""
    row = frame.loc[frame["size_mb"].idxmin()]
    return (
        f"Smallest of these: **{verbatim(row['name'])}** · {row['acc1']:.1f}% top-1 · {row['size_mb']:.1f} MB · "
        f"{row['params_m']:.1f} M parameters"
    )


def limits() -> dict[str, float | None]:
    """The accuracy and size limits, in one row of number inputs (empty: no limit)."""
    accuracy, size, params = st.columns(3)
    return {
        "min_acc1": accuracy.number_input(
            "Top-1 at least (%)", 0.0, 100.0, value=None, step=1.0, key="models_min_acc1", placeholder="any"
        ),
        "max_size_mb": size.number_input(
            "File at most (MB)", 0.0, value=None, step=5.0, key="models_max_size_mb", placeholder="any"
        ),
        "max_params_m": params.number_input(
            "Parameters at most (M)", 0.0, value=None, step=1.0, key="models_max_params_m", placeholder="any"
        ),
    }


def main() -> None:
    st.title("Models")
    st.caption(
        "Every ImageNet classifier ZooScope can run, with accuracy, size and compute from the weights' own "
        "metadata. Click a column header to sort."
    )

    link_to(CHOOSE, "Which of these fits your device's latency and size? Choose measures them here")
    catalogue = catalogue_frame()
    search, family, offline = st.columns([5, 4, 3], vertical_alignment="bottom")
    text = search.text_input("Search", key="models_search", placeholder="name, family or weights, e.g. resnet")
    families = family.multiselect(
        "Family", sorted(catalogue["family"].unique()), key="models_family", placeholder="All families"
    )
    only_available = offline.checkbox(
        "Offline only",
        key="models_available",
        help="Bundled models, and torchvision models whose weights file is already in the torch hub cache "
        "or the ZOOSCOPE_WEIGHTS_DIR folder.",
    )

    limit = limits()
    shown = within_limits(filter_catalogue(catalogue, families, text, only_available), **limit)
    if shown.empty:
        st.info(
            "No model matches these filters. Clear the search, pick other families or loosen the limits.",
            icon=":material/search_off:",
        )
        return

    st.caption(f"Showing {len(shown)} of {len(catalogue)} models")
    if any(value is not None for value in limit.values()):
        st.markdown(smallest_line(shown))
    data_table(shown, hide_index=True, width="stretch", column_order=SHOWN, column_config=COLUMN_CONFIG)
    pick, link = st.columns([2, 3], vertical_alignment="bottom")
    with pick:
        inside = st.selectbox("Look inside", shown["name"], key="models_inside", help="Its stages, graph and skips")
    with link:
        look_inside(inside)
    versions_table(list(shown["name"]))

    st.subheader("Accuracy against compute")
    st.caption("Drag to pan, scroll to zoom; point size is the parameter count.")
    st.altair_chart(accuracy_vs_gflops(shown), width="stretch")


main()
