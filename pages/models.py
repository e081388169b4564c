"""Models: the whole catalogue as one sortable table and an accuracy-against-compute chart."""

import pandas as pd
import streamlit as st

from core.models import weights
from core.models.catalog import all_specs
from ui.charts import accuracy_vs_gflops
from ui.navigation import CHOOSE, ensure_app, link_to, look_inside
from ui.tables import data_table

ensure_app()  # first: keeps a deep link to this page on the app (ui/navigation.py)

SEARCHED = ("name", "family", "weights")  # the columns the text filter looks in

COLUMN_CONFIG = {
    "name": st.column_config.TextColumn("model"),
    "family": st.column_config.TextColumn("family"),
    "acc1": st.column_config.NumberColumn("top-1 (%)", format="%.1f", help="ImageNet-1K validation top-1"),
    "acc5": st.column_config.NumberColumn("top-5 (%)", format="%.1f", help="ImageNet-1K validation top-5"),
    "params_m": st.column_config.NumberColumn("params (M)", format="%.1f", help="Parameters, in millions"),
    "gflops": st.column_config.NumberColumn("GFLOPS", format="%.2f", help="Multiply-adds per image at the input size"),
    "size_mb": st.column_config.NumberColumn("file (MB)", format="%.1f", help="Size of the weights file"),
    "input_size": st.column_config.NumberColumn("input (px)", format="%d", help="Centre-crop size the model sees"),
    "available": st.column_config.CheckboxColumn("offline", help="Weights already on this machine: no download"),
    "source": st.column_config.TextColumn("source"),
    "weights": st.column_config.TextColumn("weights"),
}
COLUMNS = list(COLUMN_CONFIG)


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
        "Only models available offline",
        key="models_available",
        help="Bundled models, and torchvision models whose weights file is already in the torch hub cache "
        "or the ZOOSCOPE_WEIGHTS_DIR folder.",
    )

    shown = filter_catalogue(catalogue, families, text, only_available)
    if shown.empty:
        st.info(
            "No model matches these filters. Clear the search or pick other families.", icon=":material/search_off:"
        )
        return

    st.caption(f"Showing {len(shown)} of {len(catalogue)} models")
    data_table(shown, hide_index=True, width="stretch", column_order=COLUMNS, column_config=COLUMN_CONFIG)
    pick, link = st.columns([2, 3], vertical_alignment="bottom")
    with pick:
        inside = st.selectbox("Look inside", shown["name"], key="models_inside", help="Its stages, graph and skips")
    with link:
        look_inside(inside)

    st.subheader("Accuracy against compute")
    st.caption("Drag to pan, scroll to zoom; point size is the parameter count.")
    st.altair_chart(accuracy_vs_gflops(shown), width="stretch")


main()
