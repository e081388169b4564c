"""The Inside page's Altair charts: parameters per stage side by side, and EfficientNet's compound scaling.

Pure functions from DataFrames to charts. Legends sit below the plots, where no axis title, panel
header or point label can land on them.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

HEAD = "head"
BAR_STEP = 18  # pixels per bar: with an x offset, Vega-Lite's width step is one model's bar
LEGEND = alt.Legend(orient="bottom", direction="horizontal")


def stage_order(stages) -> list[str]:
    """Stage labels in network order: "1", "2", ..., "10" by number (never as text), the head last."""
    labels = set(stages)
    numbered = sorted((label for label in labels if label != HEAD), key=int)
    return numbered + ([HEAD] if HEAD in labels else [])


def params_per_stage(frame: pd.DataFrame) -> alt.HConcatChart:
    """Parameters per stage, models side by side in each stage (grouped bars), stages in network order;
    the head in a panel of its own with its own scale, so a large head (VGG's 100 M parameters) leaves
    the stages readable.

    Columns: model, stage ("1", "2", ..., "head"), name, params_m, gflops, output_shape (long form).
    """
    data = frame.reindex(columns=["model", "stage", "name", "params_m", "gflops", "output_shape"])
    models = list(dict.fromkeys(data["model"]))
    color = alt.Color("model:N", title="model", sort=models, legend=LEGEND)
    tooltip = [
        alt.Tooltip("model:N"),
        alt.Tooltip("stage:N"),
        alt.Tooltip("name:N", title="ends at"),
        alt.Tooltip("output_shape:N", title="output"),
        alt.Tooltip("params_m:Q", title="parameters (M)", format=".3f"),
        alt.Tooltip("gflops:Q", title="GFLOPS", format=".3f"),
    ]

    def panel(rows: pd.DataFrame, title: str, x_title: str | None) -> alt.Chart:
        return (
            alt.Chart(rows, title=alt.Title(title, anchor="start", fontSize=12))
            .mark_bar()
            .encode(
                x=alt.X("stage:N", title=x_title, sort=stage_order(rows["stage"]), axis=alt.Axis(labelAngle=0)),
                xOffset=alt.XOffset("model:N", sort=models),
                y=alt.Y("params_m:Q", title="parameters (M)"),
                color=color,
                tooltip=tooltip,
            )
            .properties(width=alt.Step(BAR_STEP), height=260)
        )

    stages = panel(data[data["stage"] != HEAD], "Stages", "stage")
    head = panel(data[data["stage"] == HEAD], "Head (its own scale)", None)
    return alt.hconcat(stages, head, spacing=24).resolve_scale(y="independent")


SCALING_DIMENSIONS = ("depth", "width", "resolution")


def compound_scaling(frame: pd.DataFrame) -> alt.FacetChart:
    """EfficientNet's compound scaling: top-1 against depth, width and resolution, one panel each,
    one line per series (b0-b7, Lite0-2), points labelled with the model.

    Columns: model, series, depth, width, resolution, acc1 (one row per model).
    """
    data = frame.reindex(columns=["model", "series", *SCALING_DIMENSIONS, "acc1"])
    data = data.assign(short=data["model"].str.replace("efficientnet_", "", regex=False))
    base = alt.Chart()  # the fold happens at the facet, before it splits the rows by dimension
    encoding = {
        "x": alt.X("value:Q", title=None, scale=alt.Scale(zero=False)),
        "y": alt.Y("acc1:Q", title="ImageNet top-1 (%)", scale=alt.Scale(zero=False)),
    }
    lines = base.mark_line(point=True).encode(
        **encoding,
        color=alt.Color("series:N", title=None, legend=LEGEND),
        tooltip=[
            alt.Tooltip("model:N"),
            alt.Tooltip("dimension:N"),
            alt.Tooltip("value:Q"),
            alt.Tooltip("acc1:Q", title="top-1 (%)", format=".1f"),
        ],
    )
    labels = base.mark_text(align="left", dx=5, dy=-6, fontSize=9).encode(**encoding, text="short:N")
    return (
        alt.layer(lines, labels)
        .properties(width=220, height=220)
        .facet(column=alt.Column("dimension:N", title=None, sort=list(SCALING_DIMENSIONS)), data=data)
        .transform_fold(list(SCALING_DIMENSIONS), as_=["dimension", "value"])
        .resolve_scale(x="independent")
    )
