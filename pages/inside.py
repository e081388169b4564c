"""Inside: a model's architecture (stages, blocks, skip connections, its graph), what each stage
sees in a photo, and models side by side."""

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from core.errors import ZooScopeError
from core.images import decode_image
from core.inside.anatomy import Anatomy, anatomy, compound_scaling_frame, stages_long_frame, summary_row
from core.inside.model_graph import DEFAULT_DEPTH, DEPTHS, default_stage, model_dot
from core.inside.stage_maps import StageMaps, channel_grid, overlay, stage_maps, stage_maps_memory_mb
from core.jobs.queue import JobCancelled
from core.models import bundled
from core.models.catalog import all_specs, curated_specs, get_spec
from core.models.keys import ModelKey
from core.preprocessing import decode_side
from ui.inputs import file_digest, has_images, image_inputs
from ui.inside_charts import compound_scaling, params_per_stage
from ui.jobs import in_line
from ui.loading import load_with_progress
from ui.navigation import ensure_app
from ui.session import INSIDE_FOLLOWED, INSIDE_MODEL, reuse
from ui.tables import data_table
from ui.text import verbatim

ensure_app()  # first: keeps a deep link to this page on the app (ui/navigation.py)

DEFAULT_MODEL = "resnet50"
CLASSIC = ("resnet50", "vgg16", "efficientnet_b0")  # after the opened model: skips, none, compound scaling
MAX_SIDE_BY_SIDE = 3

# The page's tabs; with a photo, what each stage sees comes first.
STAGES, GRAPH, SEES, SIDE = "Stages", "Graph", "What each stage sees", "Side by side"
TABS = "inside_tab"  # the open tab's label
TABS_WITH_PHOTO = "inside_tabs_with_photo"  # whether the tabs were last laid out for a photo
MAP_SIZE = 224

STAGE_COLUMNS = {
    "stage": st.column_config.TextColumn("stage"),
    "name": st.column_config.TextColumn("ends at", help="The module whose output ends the stage"),
    "kind": st.column_config.TextColumn("what it runs"),
    "output_shape": st.column_config.TextColumn("output", help="Channels x height x width (tokens x width for ViT)"),
    "blocks": st.column_config.NumberColumn("blocks"),
    "params_m": st.column_config.NumberColumn("params (M)", format="%.3f"),
    "gflops": st.column_config.NumberColumn("GFLOPS", format="%.3f", help="Multiply-adds, torchvision's convention"),
    "receptive_field": st.column_config.TextColumn(
        "receptive field", help="The input window one output position can see, through convolutions and pooling"
    ),
    "skip_connections": st.column_config.NumberColumn("skips"),
}


def model_options() -> list[str]:
    curated = [spec.name for spec in curated_specs()]
    extra = [name for name in bundled.NAMES if name not in curated]
    rest = sorted(name for name in all_specs() if name not in curated and name not in extra)
    return [*curated, *extra, *rest]


def chosen_model(options: list[str]) -> str:
    """The selectbox's model; a `?model=` address (a "look inside" link) chooses it when it changes."""
    asked = st.query_params.get("model")
    if asked is not None and asked != st.session_state.get(INSIDE_FOLLOWED):
        st.session_state[INSIDE_FOLLOWED] = asked
        if asked in options:
            st.session_state[INSIDE_MODEL] = asked
        else:
            st.warning(f"There is no model called **{verbatim(asked)}**; showing another.", icon=":material/help:")
    if st.session_state.get(INSIDE_MODEL) not in options:
        st.session_state[INSIDE_MODEL] = DEFAULT_MODEL
    name = st.selectbox("Model", options, key=INSIDE_MODEL, help="Every catalogue model: no weights are needed here")
    if name != DEFAULT_MODEL or "model" in st.query_params:  # the address says which model, to share it
        st.query_params["model"] = st.session_state[INSIDE_FOLLOWED] = name
    return name


def show_summary(found: Anatomy) -> None:
    spec = get_spec(found.model)
    columns = st.columns(5)
    columns[0].metric("Parameters", f"{found.params / 1e6:.2f} M", help=f"{found.params:,}, counted from the model")
    columns[1].metric("GFLOPS", f"{found.gflops:.2f}", help="Multiply-adds per image at the input size")
    columns[2].metric("Input", f"{found.input_size} px")
    columns[3].metric("Depth", found.depth, help="Convolution, linear and attention layers on the longest path")
    columns[4].metric(
        "Skip connections",
        found.skip_connections,
        help="A block's input added to its output (F(x) + x) or concatenated with it",
    )
    note = f"{found.params:,} parameters counted from the module itself"
    if found.auxiliary_params:
        note += (
            f"; the weights also carry {found.auxiliary_params:,} in auxiliary classifiers used only in training"
            + (" (the published count includes them)" if found.params != spec.num_params else "")
        )
    st.caption(f"{note}. Built on PyTorch's meta device: shapes without weights or memory.")


def show_stages(found: Anatomy) -> None:
    data_table(
        found.stages_frame().drop(columns=["params"]),
        hide_index=True,
        column_config=STAGE_COLUMNS,
        column_order=list(STAGE_COLUMNS),
    )


def show_graph(found: Anatomy) -> None:
    left, right = st.columns([2, 3], vertical_alignment="bottom")
    depth = left.segmented_control("Depth", DEPTHS, default=DEFAULT_DEPTH, required=True, key="inside_depth")
    stage = None
    if depth == "layers":
        labels = [f"{stage.index + 1}. {stage.name}" for stage in found.stages] + ["head"]
        stage = right.selectbox(
            "Stage", range(len(labels)), index=default_stage(found), format_func=labels.__getitem__,
            key=f"inside_graph_stage_{found.model}",
        )  # fmt: skip
    st.graphviz_chart(model_dot(found, depth, stage), width="stretch")
    st.caption(
        "Dashed blue edges are skip connections: they carry a block's input around it, added to its output "
        "(+x) or concatenated with it. Long runs of blocks are folded into one node; *layers* shows one stage."
    )


def show_maps(maps: StageMaps, found: Anatomy) -> None:
    st.markdown(f"**{found.model}** sees **{maps.label}** ({maps.probability:.1%}).")
    if maps.rollout is not None:
        left, right, _ = st.columns(3)
        left.image(maps.view, caption="What the model sees (its crop)", width="stretch")
        right.image(overlay(maps.view, maps.rollout), caption="Where the class token attends", width="stretch")
        st.caption(
            "Attention rollout: each layer's attention (mean over heads, plus the identity for the skip "
            "connection around it) multiplied through all layers; the class token's row over the patches."
        )
    elif get_spec(found.model).traits.cam_layout == "nhwc":
        st.caption(
            "Swin has no class token to follow: its attention stays inside shifted windows and its classifier "
            "averages the last stage's tokens, so there is no single attention map to roll out. The last "
            "stage's mean activation below is what that average is taken over."
        )
    for stage, seen in zip(found.stages, maps.stages, strict=True):
        rows, columns = seen.mean.shape
        with st.container(border=True):
            st.markdown(f"**{stage.index + 1}. {verbatim(stage.name)}** · {stage.kind} · {rows} x {columns} grid")
            left, right = st.columns([1, 2])
            left.image(overlay(maps.view, seen.mean), caption="mean |activation| over channels", width="stretch")
            right.image(
                channel_grid(seen),
                caption=f"its {len(seen.channel_ids)} most active of {seen.total_channels} channels",
                width="stretch",
            )


def show_stage_maps(found: Anatomy) -> None:
    files = image_inputs("inside")
    if not files:
        st.info("Add a photo (or press *Try an example*) to see each stage's activations on it.")
        return
    names = [name for name, _ in files]
    chosen = st.selectbox("Photo", range(len(files)), format_func=names.__getitem__, key="inside_photo")
    try:
        # The maps hook PyTorch modules: the handle's torch face, whatever engine runs its inference.
        torch_model = load_with_progress(ModelKey(found.model)).torch
    except JobCancelled:
        return  # its first export was cancelled: in_line said so, with a way to start again
    except ZooScopeError as error:
        st.warning(f"{error} The anatomy needs no weights; the stage maps do.", icon=":material/cloud_off:")
        return
    file, data = files[chosen]
    try:
        picture = decode_image(data, min_side=decode_side([torch_model.preprocess]))

        def compute() -> StageMaps:
            label = f"Stage maps of {file} through {found.model}"
            with in_line("stage-maps", label, memory_mb=stage_maps_memory_mb(torch_model)):
                return stage_maps(torch_model, picture)

        maps = reuse("inside_maps", (found.model, file_digest(((file, data),))), compute)
    except JobCancelled:
        return  # in_line said so, with a way to start again
    except ZooScopeError as error:
        st.error(f"**{verbatim(file)}**: {error}", icon=":material/broken_image:")
        return
    show_maps(maps, found)


SUMMARY_ROWS = ("depth", "blocks", "widest stage", "resolution", "parameters", "GFLOPS", "skip connections")


def summary_column(found: Anatomy) -> list[str]:
    """One model's SUMMARY_ROWS as text; its widest stage is the stage table's, named by number."""
    row = summary_row(found)
    return [
        f"{row['depth']} layers", str(row["blocks"]), f"{row['width']} channels (stage {row['widest_stage']})",
        f"{row['resolution']} px", f"{row['params_m']:.2f} M", f"{row['gflops']:.2f}", str(row["skip_connections"]),
    ]  # fmt: skip


def side_by_side_models(name: str, options: list[str]) -> list[str]:
    """The models to set side by side: they start from the opened model (then the classics). One widget
    per opened model, so opening another starts again from it; the person's picks stay while it is open."""
    default = list(dict.fromkeys([name, *CLASSIC]))[:MAX_SIDE_BY_SIDE]
    return st.multiselect(
        "Models", options, default=default, max_selections=MAX_SIDE_BY_SIDE, key=f"inside_side_{name}"
    )


def show_side_by_side(name: str, options: list[str]) -> None:
    picked = side_by_side_models(name, options)
    if not picked:
        st.info("Pick up to three models to set side by side.")
        return
    with st.spinner("Reading the architectures…"):
        found = [anatomy(model) for model in picked]
    # One table, a column per model: each column wide enough for its numbers.
    data_table({"": list(SUMMARY_ROWS), **{model.model: summary_column(model) for model in found}}, hide_index=True)
    st.altair_chart(params_per_stage(stages_long_frame(found)), width="content")
    st.caption(
        "Parameters per stage in network order; the head (the classifier after the last stage) on the right, "
        "on its own scale, since a large head such as VGG's would flatten every stage. Hover a bar for the "
        "stage's output shape, as in the stage table, and its GFLOPS."
    )


def show_compound_scaling() -> None:
    if not st.toggle(
        "EfficientNet's compound scaling: depth, width and resolution against accuracy", key="inside_scaling"
    ):
        return
    with st.spinner("Reading EfficientNet b0 to b7 and Lite0 to Lite2…"):
        frame = compound_scaling_frame(list(all_specs()))
    st.altair_chart(compound_scaling(frame), width="content")
    st.caption(
        "EfficientNet grows depth, width and input resolution together (compound scaling); the Lite models "
        "keep the stem and head fixed and leave out squeeze-excitation. Depth: layers on the longest path; width: "
        "channels of the widest stage before the final 1x1 convolution; resolution: the input size. "
        "Accuracy from each model's weights."
    )


def page_tabs(*, with_photo: bool) -> dict[str, DeltaGenerator]:
    """The page's tabs by label. A photo puts what each stage sees first, and opens it when it comes
    (the browser would otherwise keep the tab that was open at that place)."""
    order = [SEES, STAGES, GRAPH, SIDE] if with_photo else [STAGES, GRAPH, SEES, SIDE]
    if st.session_state.get(TABS_WITH_PHOTO) != with_photo or st.session_state.get(TABS) not in order:
        st.session_state[TABS_WITH_PHOTO] = with_photo
        st.session_state[TABS] = order[0]
    return dict(zip(order, st.tabs(order, key=TABS, on_change="rerun"), strict=True))


def main() -> None:
    st.title("Inside")
    st.caption(
        "A model's insides: its stages and blocks, its skip connections, its graph, and what each stage "
        "sees in your photo, from edges to object parts."
    )
    options = model_options()
    name = chosen_model(options)
    try:
        with st.spinner(f"Reading {name}'s architecture…"):  # built and traced once, then cached
            found = anatomy(name)
    except ZooScopeError as error:
        st.error(str(error), icon=":material/error:")
        return
    show_summary(found)
    tabs = page_tabs(with_photo=has_images("inside"))
    with tabs[STAGES]:
        show_stages(found)
    with tabs[GRAPH]:
        show_graph(found)
    with tabs[SEES]:
        show_stage_maps(found)
    with tabs[SIDE]:
        show_side_by_side(name, options)
        show_compound_scaling()


main()
