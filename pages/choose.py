"""Choose: which model fits a latency, size, memory and accuracy budget, on this machine or on another device."""

import pandas as pd
import streamlit as st

from core.choose.frontier import (
    RUNTIME_NAMES,
    Budget,
    on_frontier,
    recommend,
    usable,
    why_nothing_fits,
    within_budget,
)
from core.choose.shortlist import device_table, runtimes_for
from core.choose.table import BadTable
from core.jobs.queue import JobCancelled
from ui.charts import choice_map
from ui.choose import measure, prediction_errors, table_here
from ui.navigation import COMPARE, ensure_app, link_to, look_inside
from ui.tables import data_table

ensure_app()  # first: keeps a deep link to this page on the app (ui/navigation.py)

HERE, ELSEWHERE = "This machine", "Another device (a table you load)"
RUNTIME_LABELS = {"any": "any", **RUNTIME_NAMES}
RUNTIMES = list(RUNTIME_LABELS)
COLUMN_CONFIG = {
    "model": st.column_config.TextColumn("model"),
    "runtime": st.column_config.TextColumn("runtime"),
    "accuracy": st.column_config.NumberColumn("top-1 (%)", format="%.1f", help="published ImageNet-1K top-1"),
    "latency_ms": st.column_config.NumberColumn("latency (ms)", format="%.1f", help="median, batch 1"),
    "measured": st.column_config.CheckboxColumn("measured", help="unticked: predicted by the latency model"),
    "throughput_ips": st.column_config.NumberColumn("images/s", format="%.0f", help="at batch 8"),
    "size_mb": st.column_config.NumberColumn("file (MB)", format="%.1f"),
    "memory_mb": st.column_config.NumberColumn("memory (MB)", format="%.0f", help="weights and a forward's peak"),
    "params_m": st.column_config.NumberColumn("params (M)", format="%.1f"),
    "gflops": st.column_config.NumberColumn("GFLOPS", format="%.2f"),
    "on_frontier": st.column_config.CheckboxColumn("frontier", help="no other model is both faster and more accurate"),
}


def budget_inputs() -> Budget:
    latency, size, memory, accuracy, runtime = st.columns(5)
    return Budget(
        max_latency_ms=latency.number_input("Latency at most (ms)", min_value=0.1, value=None, key="choose_latency"),
        max_size_mb=size.number_input("File at most (MB)", min_value=0.1, value=None, key="choose_size"),
        max_memory_mb=memory.number_input("Memory at most (MB)", min_value=1.0, value=None, key="choose_memory"),
        min_accuracy=accuracy.number_input(
            "Top-1 at least (%)", min_value=0.0, max_value=100.0, value=None, key="choose_accuracy"
        ),
        runtime=runtime.selectbox(
            "Runtime", RUNTIMES, format_func=lambda name: RUNTIME_LABELS[name], key="choose_runtime"
        )
        or "any",
    )


def the_table(budget: Budget) -> pd.DataFrame | None:
    """This machine's measurements (and what to measure next), or the table of another device."""
    source = st.radio("Measured on", [HERE, ELSEWHERE], horizontal=True, key="choose_source")
    if source == ELSEWHERE:
        upload = st.file_uploader(
            "A table from `python -m core bench-models --out TABLE.parquet` (Parquet or CSV)",
            type=["parquet", "csv"], key="choose_table",
        )  # fmt: skip
        if upload is None:
            st.info("Run `python -m core bench-models --out TABLE.parquet` on the device, then load the file here.")
            return None
        try:
            return device_table(upload.getvalue(), budget.runtime, upload.name)
        except BadTable as error:
            st.error(str(error), icon=":material/table:")
            return None
    table, machine = table_here(budget)
    measured, total = int(table["measured"].sum()), int(table["model"].nunique())
    rest = "" if measured >= total else "; the rest are predicted from them until measured"
    st.caption(
        f"{machine.describe()}: {measured} of {total} models measured here, with random weights (speed does not "
        f"depend on their values){rest}."
    )
    short, everything = st.columns(2)
    try:
        if short.button("Measure the short list", key="choose_measure_short", icon=":material/speed:",
                        help="A few models of each family, then the recommended ones still predicted"):  # fmt: skip
            table = measure(budget, machine, every_model=False)
        if everything.button("Measure every model", key="choose_measure_all", icon=":material/timer:",
                             help="The whole catalogue, cheapest first (many minutes on a small server)"):  # fmt: skip
            table = measure(budget, machine, every_model=True)
    except JobCancelled:
        pass
    return table


def show_recommendations(table: pd.DataFrame, budget: Budget) -> None:
    st.subheader("Recommended")
    st.caption(budget.describe())
    picks = recommend(table, budget)
    if not picks:
        st.warning(why_nothing_fits(table, budget), icon=":material/block:")
        return
    for rank, pick in enumerate(picks):
        name, runtime = pick.row["model"], pick.row["runtime"]
        box = st.container(border=True)
        box.markdown(f"**{rank + 1}. {name}** · {RUNTIME_LABELS[runtime]}")
        box.write(pick.reason)
        with box:
            look_inside(name)
    names = list(dict.fromkeys(pick.row["model"] for pick in picks))
    link_to(COMPARE, f"Compare {', '.join(names)} on your photos", {"models": ",".join(names)})


def show_map(table: pd.DataFrame, budget: Budget) -> None:
    st.subheader("Accuracy against latency")
    rows = usable(table, budget.runtime).copy()
    rows["on_frontier"] = on_frontier(rows)
    rows["fits"] = rows.index.isin(within_budget(table, budget).index)
    st.altair_chart(
        choice_map(rows, max_latency_ms=budget.max_latency_ms, min_accuracy=budget.min_accuracy), width="stretch"
    )
    errors = prediction_errors(table, runtimes_for(budget.runtime))
    error_text = ", ".join(f"{error:.0%} in {RUNTIME_LABELS[runtime]}" for runtime, error in errors.items())
    st.caption(
        "Each point a model in one runtime; the area is its file size, hollow points are predicted, faint ones "
        "are outside the budget. The line is the Pareto frontier: no model is both faster and more accurate."
        + (
            f" The latency model's median error on a measured model left out of its fit: {error_text}."
            if errors
            else ""
        )
    )


def show_table(table: pd.DataFrame, budget: Budget) -> None:
    st.subheader("Within the budget")
    rows = within_budget(table, budget)
    frontier = on_frontier(usable(table, budget.runtime))
    rows = rows.assign(on_frontier=frontier.reindex(rows.index, fill_value=False))
    rows = rows.sort_values(["accuracy", "latency_ms"], ascending=[False, True])
    data_table(rows[list(COLUMN_CONFIG)], hide_index=True, column_config=COLUMN_CONFIG, key="choose_rows")
    st.download_button(
        "Download the whole table (CSV)", table.to_csv(index=False), file_name="zooscope-choose.csv",
        mime="text/csv", key="choose_csv", icon=":material/download:",
    )  # fmt: skip


def main() -> None:
    st.title("Choose")
    st.caption(
        "Which model fits your device: a latency, file size, memory and accuracy budget in, the models that "
        "fit out, the most accurate first. Measured on this machine, or on any device the command line runs on."
    )
    budget = budget_inputs()
    table = the_table(budget)
    if table is None:
        return
    show_recommendations(table, budget)
    show_map(table, budget)
    show_table(table, budget)


main()
