"""The "Weights" choice beside a model's: which of its published ImageNet weights versions to use.

Shown only for a model torchvision publishes more than one version of (resnet50's IMAGENET1K_V1 and V2,
vit_b_16's SWAG ones); None, the default, stands for torchvision's DEFAULT weights, as in core.models.keys.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.models.catalog import ModelSpec, all_specs, weights_versions
from ui.tables import data_table

HELP = (
    "The same architecture trained by another recipe: torchvision publishes each with its ImageNet accuracy. "
    "Some take a larger input (SWAG at 384 px and more), which their own preprocessing does."
)


def version_label(spec: ModelSpec) -> str:
    default = " (default)" if spec.default_weights else ""
    return f"{spec.version}{default} · {spec.acc1:.1f}% top-1 · {spec.input_size} px · {spec.file_size_mb:.0f} MB"


def weights_select(name: str, container=st, *, key: str, label: str = "Weights") -> str | None:
    """None (the default weights) or the version chosen for `name`; draws nothing where it has one version.

    The widget's key names the model, so each model keeps its own choice and a stale one never carries over.
    """
    versions = weights_versions(name) if name in all_specs() else []
    if len(versions) < 2:
        return None
    by_choice = {spec.weights_choice: spec for spec in sorted(versions, key=lambda spec: not spec.default_weights)}
    return container.selectbox(
        label,
        list(by_choice),
        format_func=lambda choice: version_label(by_choice[choice]),
        key=f"{key}_{name}",
        help=HELP,
    )


VERSION_COLUMN_CONFIG = {
    "name": st.column_config.TextColumn("model", width=150, pinned=True),
    "weights": st.column_config.TextColumn("weights", width=190),
    "default": st.column_config.CheckboxColumn("default", width=60, help="torchvision's DEFAULT: what a model uses"),
    "acc1": st.column_config.NumberColumn("top-1 (%)", format="%.1f", width=68, help="Published ImageNet-1K top-1"),
    "acc5": st.column_config.NumberColumn("top-5 (%)", format="%.1f", width=68, help="Published ImageNet-1K top-5"),
    "size_mb": st.column_config.NumberColumn("file (MB)", format="%.1f", width=68),
    "input_size": st.column_config.NumberColumn("input (px)", format="%d", width=68),
    # The link's text, not its address: the table fits a 1280 px window.
    "recipe": st.column_config.LinkColumn(
        "recipe", help="How these weights were trained", width=90, display_text="training recipe"
    ),
}


def versions_table(names: list[str]) -> None:
    """The weights versions of the models in `names` that have several, one row each, with each one's recipe."""
    from core.models.versions import version_rows  # the page's only use of it

    rows = version_rows(names)
    if not rows:
        return
    st.subheader("Weights versions")
    st.caption(
        "Some models come in several published weights: the same architecture trained by another recipe. "
        "Choose one beside the model on Classify, Compare and Fine-tune, or with `--weights` on the command line."
    )
    data_table(pd.DataFrame(rows), hide_index=True, width="stretch", column_config=VERSION_COLUMN_CONFIG)
