"""Features: a pre-trained model as an eye on your own photos: a map, neighbours, near-duplicates, a score.

Every image goes through one to three backbones' penultimate layer (core.features.embedding, core.features.analysis);
the page draws what those embeddings say. Embeddings are kept in the session per (images, backbone),
so moving a slider never embeds again.
"""

import functools

import numpy as np
import pandas as pd
import streamlit as st

from core.datasets.sources import SourceSet, from_uploads, from_zip
from core.engines.handle import ModelHandle
from core.errors import NetworkUnavailable, ZooScopeError
from core.features.analysis import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_DUPLICATE_THRESHOLD,
    PROJECTION_LABELS,
    PROJECTIONS,
    Embeddings,
    clusters,
    duplicate_groups,
    embed,
    group_similarity,
    knn_accuracy,
    most_similar,
    neighbours,
    no_map_reason,
    project,
    projection_refusal,
    similar_pairs,
)
from core.features.embedding import Embedded, embed_encoded, embedder_for, embedding_memory_mb
from core.features.feature_files import to_csv, to_parquet
from core.images import SUPPORTED_TYPES
from core.jobs.queue import JobCancelled
from core.models import bundled
from core.models.catalog import all_specs, curated_specs
from core.models.keys import ModelKey
from ui import fallback
from ui.charts import POINT_SELECTION, embedding_map, image_data_url
from ui.inputs import file_digest, image_inputs
from ui.jobs import in_line
from ui.loading import load_many
from ui.navigation import ensure_app
from ui.progress import progress_bar
from ui.session import reuse
from ui.tables import data_table, share_column
from ui.text import counted, short_name, verbatim
from ui.transfer import transfer_section

ensure_app()  # first: keeps a deep link to this page on the app (ui/navigation.py)

MODELS_KEY = "features_models"
MAX_MODELS = 3
FOCUS_KEY = "features_focus"  # the image whose neighbours are shown: the map's click or the selectbox
CHART_NONCE_KEY = "features_map_nonce"
THUMBNAIL_SIDE = 96
MAP_THUMBNAILS = 1500  # above this, tooltips carry no picture: the chart would send megabytes on every run
SLIDER_FLOOR = 0.3  # the near-duplicate slider's lowest value: pairs are found once at it
MAX_GROUPS_SHOWN = 20
PER_ROW = 8
GROUP_IMAGES_SHOWN = 2 * PER_ROW
NO_CLASS = "(no class)"
CAPTION_CHARS = 13  # of a file name under a thumbnail, PER_ROW to a row at 1280 px: one line, never split mid-word


def model_options() -> list[str]:
    """Models with a penultimate layer: the bundled ones first, then the curated, then the rest."""
    usable = {name for name, spec in all_specs().items() if spec.traits.head is not None}
    first = [*bundled.NAMES, *(spec.name for spec in curated_specs() if spec.name not in bundled.NAMES)]
    first = [name for name in dict.fromkeys(first) if name in usable]
    return [*first, *sorted(usable - set(first))]


def gather_sources(files: list[tuple[str, bytes]], archive) -> SourceSet:
    """The photos and the zip's images (labelled by class folder); a refused zip is reported, the photos go on."""
    found = from_uploads(files)
    if archive is not None:
        try:
            found.extend(from_zip(archive.getvalue()))
        except ZooScopeError as error:
            st.error(f"**{verbatim(archive.name)}**: {error}", icon=":material/folder_zip:")
    return found


def embeddings_of(model: ModelHandle, sources: SourceSet, key: str) -> Embeddings:
    """`sources` through `model`'s penultimate layer, once per (images, backbone) in this session."""

    def compute() -> Embeddings:
        label = f"Embedding {counted(len(sources.images), 'image')} with {model.name}"
        memory = embedding_memory_mb(
            model.torch, len(sources.images), runtime=model.runtime, batch_size=DEFAULT_BATCH_SIZE,
            thumbnail_side=THUMBNAIL_SIDE,
        )  # fmt: skip
        with in_line("embed", label, memory_mb=memory), progress_bar(f"{label}…") as progress:
            embedder = embedder_for(model.torch, runtime=model.runtime, progress=progress)
            return embed(embedder, sources, thumbnail_side=THUMBNAIL_SIDE, progress=progress)

    return reuse(f"features_embeddings_{model.name}", (key, model.name, model.runtime), compute)


def thumbnails(embeddings: Embeddings) -> list[bytes]:
    """Each image's thumbnail: embeddings_of always makes them."""
    assert embeddings.thumbnails is not None, "embeddings_of embeds with thumbnails"
    return embeddings.thumbnails


def show_skipped(sources: SourceSet) -> None:
    if sources.skipped:
        with st.expander(f"Left out of the zip: {counted(len(sources.skipped), 'file')}"):
            for skipped in sources.skipped:
                st.markdown(f"- **{verbatim(skipped.name)}**: {skipped.reason}")


def show_failures(embeddings: Embeddings) -> None:
    """Every file that could not be read, by name, with its reason; the rest go on."""
    for failure in embeddings.failures:
        st.error(f"**{verbatim(failure.file)}**: {failure.error}", icon=":material/broken_image:")


def caption_name(file: str) -> str:
    """A file's name under its thumbnail: without its folders, cut in the middle when long."""
    return short_name(file.rsplit("/", 1)[-1], CAPTION_CHARS)


def image_row(embeddings: Embeddings, rows: list[int], captions: list[str]) -> None:
    for start in range(0, len(rows), PER_ROW):
        columns = st.columns(PER_ROW)
        for column, row, caption in zip(columns, rows[start : start + PER_ROW], captions[start:], strict=False):
            column.image(thumbnails(embeddings)[row], caption=caption, width="stretch")


# --- the map and the neighbours ---------------------------------------------------------------------


def focus_clicked(chart_key: str) -> None:
    """The map's on_select: the clicked point's neighbours are shown (a double click keeps the last)."""
    state = st.session_state.get(chart_key)
    points = state.selection.get(POINT_SELECTION) if state is not None else None
    if points:
        st.session_state[FOCUS_KEY] = int(points[0]["index"])


def redraw_map() -> None:
    """The image was chosen in the selectbox: a fresh map, without the old point highlighted."""
    st.session_state[CHART_NONCE_KEY] = st.session_state.get(CHART_NONCE_KEY, 0) + 1


def map_points(embeddings: Embeddings, key: str, method: str) -> np.ndarray:
    def compute() -> np.ndarray:
        with st.spinner(f"Drawing the {PROJECTION_LABELS[method]} map of {len(embeddings):,} images…"):
            return project(embeddings.unit, method)

    return reuse(f"features_map_{embeddings.model}", (key, method), compute)


def show_map(embeddings: Embeddings, key: str) -> None:
    st.subheader("The map")
    if reason := no_map_reason(len(embeddings)):
        st.info(reason, icon=":material/scatter_plot:")
        return
    left, middle, right = st.columns([1, 1, 1])
    method = left.segmented_control(
        "Map",
        PROJECTIONS,
        default="pca",
        format_func=PROJECTION_LABELS.__getitem__,
        required=True,
        key="features_projection",
    )
    colours = ["label", "cluster"] if any(embeddings.labels) else ["cluster"]
    colour = colours[0]  # without labels, k-means clusters: no choice to offer
    if len(colours) > 1:
        colour = middle.segmented_control(
            "Colour by",
            colours,
            default=colours[0],
            required=True,
            key=f"features_colour_{len(colours)}",  # a fresh control when labels arrive: "label" by default
            help="label: the class folder in the zip; cluster: k-means on the embeddings",
        )
    if refusal := projection_refusal(method, len(embeddings)):
        st.warning(refusal, icon=":material/speed:")
        method = "pca"
    points = map_points(embeddings, key, method)
    frame = pd.DataFrame({"index": range(len(embeddings)), "x": points[:, 0], "y": points[:, 1]})
    frame["file"] = embeddings.files
    if colour == "label":
        frame["label"] = [label or NO_CLASS for label in embeddings.labels]
    else:
        count = right.number_input("Clusters", 2, 20, min(5, len(embeddings)), key="features_clusters")
        found = reuse(f"features_clusters_{embeddings.model}", (key, count), lambda: clusters(embeddings.unit, count))
        frame["cluster"] = [f"cluster {c + 1}" for c in found]
    if len(embeddings) <= MAP_THUMBNAILS:
        frame["image"] = [image_data_url(thumbnail) for thumbnail in thumbnails(embeddings)]
    chart_key = f"features_map_{st.session_state.get(CHART_NONCE_KEY, 0)}"
    st.altair_chart(
        embedding_map(frame, colour=colour, selectable=True),
        width="stretch",
        key=chart_key,
        on_select=lambda: focus_clicked(chart_key),
        selection_mode=POINT_SELECTION,
    )
    st.caption(
        "Each point is an image; close points are images the model sees alike. Hover for the picture, click a "
        "point to see its nearest neighbours below."
    )


def show_neighbours(embeddings: Embeddings, k: int) -> None:
    st.subheader("Nearest neighbours")
    count = len(embeddings)
    if count < 2:
        st.info("With one image there is nothing to compare it with.")
        return
    if st.session_state.get(FOCUS_KEY) not in range(count):
        st.session_state[FOCUS_KEY] = 0
    chosen = st.selectbox(
        "Neighbours of", range(count), format_func=lambda i: embeddings.files[i], key=FOCUS_KEY, on_change=redraw_map
    )
    found = neighbours(embeddings, chosen, k)
    rows = [chosen, *(n.index for n in found)]
    captions = [
        f"{caption_name(embeddings.files[chosen])} (chosen)",
        *(f"{n.similarity:.3f} · {caption_name(n.file)}" for n in found),
    ]
    image_row(embeddings, rows, captions)
    st.caption("Similarity is the cosine of two embeddings: 1 for the same picture, near 0 for unrelated ones.")


# --- near-duplicates ------------------------------------------------------------------------------


def show_duplicates(embeddings: Embeddings, key: str) -> None:
    st.subheader("Near-duplicates")
    threshold = st.slider(
        "Similarity at least",
        SLIDER_FLOOR,
        1.0,
        DEFAULT_DUPLICATE_THRESHOLD,
        0.01,
        key="features_threshold",
        help=f"Two images this similar or more are near-duplicates; groups join copies of copies. The default, "
        f"{DEFAULT_DUPLICATE_THRESHOLD}, was measured on planted copies (resized, cropped, mirrored): see the README.",
    )
    pairs = reuse(
        f"features_pairs_{embeddings.model}", key, lambda: similar_pairs(embeddings.unit, SLIDER_FLOOR)
    )  # found once; every slider position groups them at once
    if threshold < pairs.floor:
        st.warning(
            f"At {threshold:.2f} too many pairs of images count as near-duplicates to group; "
            f"move the slider to {pairs.floor:.2f} or more.",
            icon=":material/warning:",
        )
        return
    groups = duplicate_groups(pairs, threshold)
    if not groups:
        st.success(
            f"No near-duplicates among {counted(len(embeddings), 'image')} at {threshold:.2f}.", icon=":material/check:"
        )
        return
    images = sum(len(group) for group in groups)
    st.markdown(f"**{counted(len(groups), 'group')}**, {images} images in all, at similarity {threshold:.2f} or more")
    for number, group in enumerate(groups[:MAX_GROUPS_SHOWN], start=1):
        loosest = group_similarity(embeddings, group)
        st.markdown(f"Group {number}: {len(group)} images, loosest pair {loosest:.3f}")
        shown = group[:GROUP_IMAGES_SHOWN]
        image_row(embeddings, shown, [caption_name(embeddings.files[row]) for row in shown])
        if len(group) > len(shown):
            st.caption(f"… and {len(group) - len(shown)} more in this group.")
    if len(groups) > MAX_GROUPS_SHOWN:
        st.caption(f"Showing the first {MAX_GROUPS_SHOWN} of {len(groups)} groups (biggest first).")


# --- a query photo --------------------------------------------------------------------------------


def show_query(model: ModelHandle, embeddings: Embeddings, k: int) -> None:
    st.subheader("Find similar images")
    query = st.file_uploader("A photo to search for", type=list(SUPPORTED_TYPES), key="features_query")
    if query is None:
        st.caption("Upload a photo: the images of the set most like it are listed here, most similar first.")
        return
    (result,) = embed_encoded(embedder_for(model.torch, runtime=model.runtime), [query.getvalue()])
    if not isinstance(result, Embedded):
        st.error(f"**{verbatim(query.name)}**: {result}", icon=":material/broken_image:")
        return
    found = most_similar(embeddings, result.vector, k)
    photo, rest = st.columns([1, PER_ROW - 1])
    photo.image(query.getvalue(), caption=f"{caption_name(query.name)} (the query)", width="stretch")
    with rest:
        image_row(embeddings, [n.index for n in found], [f"{n.similarity:.3f} · {caption_name(n.file)}" for n in found])


# --- which backbone separates the classes ---------------------------------------------------------


def show_scores(all_embeddings: list[Embeddings], key: str) -> None:
    st.subheader("Which backbone separates your classes best")
    if not any(any(e.labels) for e in all_embeddings):
        st.caption("Upload a zip of class folders (`cat/1.jpg`, `dog/2.jpg`) to score each backbone on your classes.")
        return
    rows = []
    for embeddings in all_embeddings:
        score = reuse(f"features_knn_{embeddings.model}", key, functools.partial(knn_accuracy, embeddings))
        if score is None:
            st.info("The k-NN score needs images of at least two classes.")
            return
        rows.append({"backbone": embeddings.model, "accuracy": score.accuracy, "correct": score.correct,
                     "images": score.images, "classes": score.classes, "k": score.k})  # fmt: skip
    frame = pd.DataFrame(rows)
    data_table(
        frame,
        hide_index=True,
        column_config={
            "accuracy": share_column("k-NN accuracy", help="Each labelled image classified by its k nearest others"),
        },
    )
    best = frame.loc[frame["accuracy"].idxmax()]
    tied = (frame["accuracy"] == best["accuracy"]).sum() > 1
    verdict = "Tied at the top" if tied else f"**{best['backbone']}** separates your classes best"
    st.markdown(
        f"{verdict}: {best['accuracy']:.1%} of the labelled images are put in their own class by the vote of "
        f"their {best['k']} most similar other images (leave-one-out k-NN, cosine). A backbone that scores high "
        "here is a good start for Fine-tune."
    )


def show_downloads(embeddings: Embeddings, key: str) -> None:
    stem = f"zooscope-embeddings-{embeddings.model}"
    files = reuse(
        f"features_files_{embeddings.model}", key, lambda: (to_parquet(embeddings), to_csv(embeddings))
    )  # fmt: skip
    left, right = st.columns(2)
    left.download_button(
        "Download the embeddings (Parquet)", files[0], file_name=f"{stem}.parquet",
        mime="application/vnd.apache.parquet", key="features_parquet", icon=":material/download:",
    )  # fmt: skip
    right.download_button(
        "Download the embeddings (CSV)", files[1], file_name=f"{stem}.csv", mime="text/csv",
        key="features_csv", icon=":material/download:",
    )  # fmt: skip


def main() -> None:
    st.title("Features")
    st.caption(
        "A pre-trained model as an eye on your own photos: how it arranges them, which look alike, which are "
        "near-duplicates, and which backbone tells your classes apart best."
    )
    options = model_options()
    fallback.prepare(MODELS_KEY)
    chosen = st.multiselect(
        "Backbones",
        options,
        default=fallback.default_choice(MODELS_KEY, [bundled.NAMES[0]]),
        max_selections=MAX_MODELS,
        key=MODELS_KEY,
        help=f"One to {MAX_MODELS}. Each image's embedding is the backbone's penultimate layer.",
    )
    fallback.show_note(MODELS_KEY)
    fallback.fall_back(MODELS_KEY, chosen)
    photos_tab, zip_tab = st.tabs(["Photos", "Zip of class folders"])
    with photos_tab:
        files = image_inputs("features")
    with zip_tab:
        archive = st.file_uploader(
            "A zip of images; class folders give them labels",
            type=["zip"],
            key="features_zip",
            help="`cat/1.jpg`, `dog/2.png`: the folder names are the classes (one wrapping folder is fine).",
        )

    if not chosen:
        st.info("Pick at least one backbone.")
        return
    sources = gather_sources(files, archive)
    if not sources.images:
        show_skipped(sources)
        st.info("Add photos above, or a zip of images: the set is empty.", icon=":material/photo_library:")
        return

    try:
        models = load_many([ModelKey(name) for name in chosen])
    except NetworkUnavailable as error:
        fallback.fall_back(MODELS_KEY, chosen)
        st.error(str(error), icon=":material/cloud_off:")
        return
    # The photos by their bytes; the zip by its upload (hashing a big zip on every rerun would cost more).
    key = f"{file_digest(tuple(files))}:{archive.file_id if archive is not None else ''}"
    all_embeddings = []
    for model in models:
        try:
            all_embeddings.append((model, embeddings_of(model, sources, key)))
        except JobCancelled:
            return  # in_line said so, with a way to start again
        except ZooScopeError as error:
            st.warning(f"**{model.name}** is left out: {error}", icon=":material/block:")
    if not all_embeddings:
        st.error("None of the chosen backbones could embed the images.", icon=":material/error:")
        return
    show_skipped(sources)
    show_failures(all_embeddings[0][1])
    if not len(all_embeddings[0][1]):
        files_read = counted(len(sources.images), "file")
        st.error(f"None of the {files_read} could be read as an image.", icon=":material/error:")
        return

    names = [model.name for model, _ in all_embeddings]
    left, right = st.columns(2)
    shown = left.selectbox("Look through", names, key="features_view") if len(names) > 1 else names[0]
    model, embeddings = next(pair for pair in all_embeddings if pair[0].name == shown)
    k = right.slider("Neighbours to show", 1, 20, 5, key="features_k")
    runtime = {"onnx": "ONNX Runtime", "torch": "PyTorch"}.get(embeddings.runtime, embeddings.runtime)
    st.caption(f"{counted(len(embeddings), 'image')} · {embeddings.dimensions:,} numbers each from {shown} · {runtime}")

    show_map(embeddings, key)
    show_neighbours(embeddings, k)
    show_duplicates(embeddings, key)
    show_query(model, embeddings, k)
    show_scores([e for _, e in all_embeddings], key)
    show_downloads(embeddings, key)


main()
# Its own labelled set and backbones: drawn whatever the sections above had to say.
transfer_section(model_options(), st.session_state.get(MODELS_KEY) or [bundled.NAMES[0]])
