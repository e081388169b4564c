"""Features' "Which layer fits your images": a linear probe on every stage of one to three backbones.

A labelled set in (a zip of class folders, or the example dataset), each backbone's stages probed in
line with the other visitors' heavy work (core.features.probes), then a chart of accuracy against
relative depth, a sentence that says what it means, and a table. The result stays in the session as
`transfer_result` (TRANSFER_RESULT): the `transfer` command's JSON plus the dataset's name, which
Fine-tune reads to suggest training from the best stage.
"""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import pandas as pd
import streamlit as st

from core.datasets.labelled import Dataset, dataset_from_zip
from core.errors import NetworkUnavailable, ZooScopeError
from core.features.embedding import embedding_memory_mb
from core.features.probes import ProbeResult, check_labels, lesson, probe_backbone, transfer_json
from core.finetune.examples import EXAMPLE_DESCRIPTION, example_dataset
from core.jobs.queue import JobCancelled
from core.models.keys import ModelKey
from ui.jobs import in_line
from ui.loading import load_many
from ui.progress import progress_bar
from ui.tables import data_table, share_column
from ui.text import counted, verbatim

# {"backbones": {name: {"stages": [{stage, relative_depth, dim, accuracy, std}], "best": stage}}, "dataset": name}
TRANSFER_RESULT = "transfer_result"
PROBES = "transfer_probes"  # the ProbeResults behind it, for the sentences
MAX_BACKBONES = 3
BATCH_SIZE = 16
ZIP, EXAMPLE = "A zip of class folders", "The example dataset"
EXAMPLE_NAME = "the example dataset"


def depth_chart(frame: pd.DataFrame) -> alt.LayerChart:
    """Probe accuracy against relative depth, a line and a ±std band per backbone, the best stage of each
    marked and named. Columns: backbone, stage, relative_depth, dim, accuracy, std, best."""
    data = frame.assign(low=(frame["accuracy"] - frame["std"]).clip(lower=0),
                        high=(frame["accuracy"] + frame["std"]).clip(upper=1))  # fmt: skip
    x = alt.X("relative_depth:Q", title="relative depth (0: input, 1: penultimate layer)",
              scale=alt.Scale(domain=[0, 1]))  # fmt: skip
    colour = alt.Color("backbone:N", title="backbone", legend=alt.Legend(orient="bottom"))
    base = alt.Chart(data).encode(x=x, color=colour)
    band = base.mark_area(opacity=0.15).encode(y=alt.Y("low:Q"), y2=alt.Y2("high:Q"))
    tooltip = [
        alt.Tooltip("backbone:N"), alt.Tooltip("stage:N"), alt.Tooltip("dim:Q", title="numbers"),
        alt.Tooltip("accuracy:Q", format=".1%"), alt.Tooltip("std:Q", title="± std", format=".1%"),
    ]  # fmt: skip
    line = base.mark_line(point=True).encode(
        y=alt.Y("accuracy:Q", title="linear probe accuracy (cross-validated)", axis=alt.Axis(format="%"),
                scale=alt.Scale(zero=False)),
        tooltip=tooltip,
    )  # fmt: skip
    best = base.transform_filter(alt.datum.best).encode(y="accuracy:Q", tooltip=tooltip)
    marks = best.mark_point(size=160, shape="diamond", filled=True, opacity=1)
    labels = best.mark_text(dy=-14, fontWeight="bold").encode(text=alt.Text("stage:N"))
    return alt.LayerChart(layer=[band, line, marks, labels])


def result_frame(result: dict) -> pd.DataFrame:
    """The JSON's stages as rows, one per (backbone, stage), the best of each flagged."""
    rows = [
        {"backbone": name, **stage, "best": stage["stage"] == probes["best"]}
        for name, probes in result["backbones"].items()
        for stage in probes["stages"]
    ]
    return pd.DataFrame(rows, columns=["backbone", "stage", "relative_depth", "dim", "accuracy", "std", "best"])


def read_set(source: str, archive) -> tuple[Dataset, str]:
    """The labelled set chosen, checked; ZooScopeError (a one-line reason) where it cannot be probed."""
    if source == EXAMPLE:
        dataset, name = example_dataset(), EXAMPLE_NAME
    elif archive is None:
        raise ZooScopeError("Upload a zip of class folders first, or choose the example dataset.")
    else:
        dataset, name = dataset_from_zip(archive.getvalue()), archive.name
    dataset.validate()
    check_labels([item.label for item in dataset.items])
    return dataset, name


def probe_all(names: Sequence[str], dataset: Dataset) -> list[ProbeResult]:
    """Each backbone's stages probed, in line; one that cannot load or be probed is said and skipped."""
    results = []
    for model in load_many([ModelKey(name) for name in names]):
        loaded = model.torch  # hooks on every stage: PyTorch's modules, whatever runtime the page uses
        label = f"Probing every stage of {model.name} on {counted(len(dataset.items), 'image')}"
        memory = embedding_memory_mb(loaded, len(dataset.items), runtime="torch", batch_size=BATCH_SIZE)
        try:
            with in_line("transfer", label, memory_mb=memory) as job, progress_bar(f"{label}…") as progress:
                results.append(
                    probe_backbone(loaded, dataset.items, batch_size=BATCH_SIZE, progress=progress,
                                   before_batch=job.check)
                )  # fmt: skip
        except JobCancelled:
            continue  # in_line said so, with a way to start again
        except ZooScopeError as error:
            st.warning(f"**{model.name}** is left out: {error}", icon=":material/block:")
    return results


def run(names: Sequence[str], source: str, archive) -> None:
    try:
        dataset, name = read_set(source, archive)
        results = probe_all(names, dataset)
    except NetworkUnavailable as error:
        st.error(str(error), icon=":material/cloud_off:")
        return
    except ZooScopeError as error:
        st.error(verbatim(str(error)), icon=":material/error:")
        return
    if results:
        st.session_state[TRANSFER_RESULT] = {**transfer_json(results), "dataset": name}
        st.session_state[PROBES] = results


def show_result() -> None:
    result, probes = st.session_state.get(TRANSFER_RESULT), st.session_state.get(PROBES)
    if not result or not probes:
        return
    frame = result_frame(result)
    first = probes[0]
    st.altair_chart(depth_chart(frame), width="stretch", key="transfer_chart")
    st.caption(
        f"On {verbatim(result['dataset'])}: {counted(first.images, 'image')} in {counted(first.classes, 'class')}, "
        f"a logistic regression on each stage's features, {first.folds}-fold cross-validated on the same folds "
        "for every stage. " + " ".join(lesson(probe) for probe in probes)
    )
    table = frame.assign(best=frame["best"].map({True: "best", False: ""}))
    data_table(
        table,
        hide_index=True,
        column_config={
            "relative_depth": st.column_config.NumberColumn("relative depth", format="%.2f"),
            "dim": st.column_config.NumberColumn("numbers", help="The stage's pooled vector's length"),
            "accuracy": share_column("accuracy", help="Mean over the folds"),
            "std": st.column_config.NumberColumn("± std", format="%.3f", help="Spread over the folds"),
        },
    )


def transfer_section(options: Sequence[str], default: Sequence[str]) -> None:
    """The section, whole: inputs, the button, and the last result."""
    st.subheader("Which layer fits your images")
    st.caption(
        "Early layers see edges and textures, late ones ImageNet's objects. A linear probe on every stage "
        "shows which layer's features tell your classes apart best: on images unlike ImageNet's, an "
        "earlier stage can beat the penultimate layer."
    )
    source = st.radio("Labelled images", (ZIP, EXAMPLE), horizontal=True, key="transfer_source")
    archive = None
    if source == ZIP:
        archive = st.file_uploader(
            "A zip with one folder of images per class", type=["zip"], key="transfer_zip",
            help="`cat/1.jpg`, `dog/2.png`: the folder names are the classes; 2 or more images per class.",
        )  # fmt: skip
    else:
        st.caption(f"The example dataset: {EXAMPLE_DESCRIPTION}.")
    names = st.multiselect(
        "Backbones to probe", options, default=[name for name in default if name in options][:1],
        max_selections=MAX_BACKBONES, key="transfer_models",
    )  # fmt: skip
    if st.button("Probe every stage", key="transfer_run", icon=":material/layers:", disabled=not names):
        run(names, source, archive)
    show_result()
