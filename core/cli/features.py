"""`embed`, `similar` and `duplicates`: a model's penultimate layer as an eye on a set of images."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from core.cli.common import add_runtime_option, add_weights_option, load, positive, progress_if_watched, read_file
from core.datasets.sources import SourceSet, from_paths
from core.errors import ImageError, ZooScopeError
from core.features.analysis import (
    DEFAULT_DUPLICATE_THRESHOLD,
    Embeddings,
    embed,
    find_duplicates,
    group_similarity,
    most_similar,
)
from core.features.embedding import Embedder, embed_encoded, embedder_for
from core.features.feature_files import read_parquet, to_parquet
from core.models.catalog import OFFLINE_DEFAULT
from core.models.keys import ModelKey
from core.runtime import ENGINE_LABELS

SOURCES_HELP = "image files, folders (class folders give labels) or zips of class folders"


def similarity(value: str) -> float:
    threshold = float(value)
    if not 0.0 < threshold <= 1.0:
        raise argparse.ArgumentTypeError("the threshold is a cosine similarity above 0 and at most 1")
    return threshold


def embedder(name: str, args: argparse.Namespace) -> Embedder:
    model = load(ModelKey(name, weights=args.weights), args)
    return embedder_for(model.torch, runtime=model.runtime, progress=progress_if_watched)


def embed_sources(paths: Sequence[str], args: argparse.Namespace) -> Embeddings:
    """Every image in `paths` embedded by --model; skipped and unreadable files reported on stderr."""
    found: SourceSet = from_paths(paths)
    for skipped in found.skipped:
        print(f"skipped: {skipped.name}: {skipped.reason}", file=sys.stderr)
    if not found.images:
        raise ZooScopeError(f"No images to embed: {', '.join(paths)} holds no image files.")
    embeddings = embed(embedder(args.model, args), found, progress=progress_if_watched)
    for failure in embeddings.failures:
        print(f"error: {failure.file}: {failure.error}", file=sys.stderr)
    if not len(embeddings):
        raise ZooScopeError(f"None of the {len(found.images):,} files could be read as an image.")
    return embeddings


def run_embed(args: argparse.Namespace) -> int:
    embeddings = embed_sources(args.sources, args)
    out = Path(args.out)
    try:
        out.write_bytes(to_parquet(embeddings))
    except OSError as error:
        raise ZooScopeError(f"Could not write {out}: {error.strerror or error}.") from error
    failed = f"; {len(embeddings.failures):,} could not be read" if embeddings.failures else ""
    print(
        f"{len(embeddings):,} images embedded by {embeddings.model} ({embeddings.dimensions} numbers each, "
        f"{ENGINE_LABELS[embeddings.runtime]}){failed}; written to {out}"
    )
    return 0


def run_similar(args: argparse.Namespace) -> int:
    embeddings = read_parquet(args.file)
    model = args.model or embeddings.model
    if not model:
        raise ZooScopeError(f"{args.file} does not say which model made it; give it with --model.")
    if not len(embeddings):
        raise ZooScopeError(f"{args.file} holds no embeddings to search.")
    (query,) = embed_encoded(embedder(model, args), [read_file(args.query, "query image")])
    if isinstance(query, ImageError):
        raise ZooScopeError(f"{args.query}: {query}")
    if query.vector.shape[0] != embeddings.dimensions:
        raise ZooScopeError(
            f"{model} gives {query.vector.shape[0]} numbers per image, but {args.file} holds "
            f"{embeddings.dimensions}: it was made by another model."
        )
    found = most_similar(embeddings, query.vector, args.k)
    if args.format == "json":
        print(json.dumps([neighbour.as_json() for neighbour in found], indent=2))
    else:
        print(f"most similar to {args.query} among {len(embeddings):,} images ({model}, cosine similarity):")
        for rank, neighbour in enumerate(found, start=1):
            print(f"  {rank:>2}. {neighbour.similarity:6.3f}  {neighbour.file}")
    return 0


def run_duplicates(args: argparse.Namespace) -> int:
    embeddings = embed_sources(args.sources, args)
    groups = find_duplicates(embeddings, args.threshold)
    named = [[embeddings.files[index] for index in group] for group in groups]
    if args.format == "json":
        print(json.dumps({"threshold": args.threshold, "groups": named}, indent=2))
        return 0
    if not groups:
        print(f"no near-duplicates among {len(embeddings):,} images at similarity {args.threshold:g} or more")
    for number, (group, files) in enumerate(zip(groups, named, strict=True), start=1):
        closest = group_similarity(embeddings, group)
        print(f"group {number}: {len(files)} images, linked at similarity {args.threshold:g} or more "
              f"(its least similar pair: {closest:.3f})")  # fmt: skip
        for file in files:
            print(f"  {file}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    embed_parser = commands.add_parser("embed", help="embeddings (the penultimate layer) of images, as Parquet")
    embed_parser.add_argument("sources", nargs="+", metavar="SOURCE", help=SOURCES_HELP)
    embed_parser.add_argument("--model", default=OFFLINE_DEFAULT, help=f"catalogue name (default {OFFLINE_DEFAULT})")
    embed_parser.add_argument("--out", required=True, metavar="FILE.parquet", help="where to write the embeddings")
    add_runtime_option(embed_parser)
    add_weights_option(embed_parser)
    embed_parser.set_defaults(run=run_embed)

    similar = commands.add_parser("similar", help="the images of an embeddings file most similar to a photo")
    similar.add_argument("file", metavar="FILE.parquet", help="written by embed")
    similar.add_argument("--query", required=True, metavar="IMAGE", help="the photo to search for")
    similar.add_argument("--k", type=positive, default=5, help="how many to list (default 5)")
    similar.add_argument("--model", help="the model that made FILE (default: the one FILE names)")
    similar.add_argument("--format", choices=("table", "json"), default="table")
    add_runtime_option(similar)
    add_weights_option(similar, "the model that made FILE")
    similar.set_defaults(run=run_similar)

    duplicates = commands.add_parser("duplicates", help="groups of near-duplicate images")
    duplicates.add_argument("sources", nargs="+", metavar="SOURCE", help=SOURCES_HELP)
    duplicates.add_argument("--model", default=OFFLINE_DEFAULT, help=f"catalogue name (default {OFFLINE_DEFAULT})")
    duplicates.add_argument(
        "--threshold",
        type=similarity,
        default=DEFAULT_DUPLICATE_THRESHOLD,
        help=f"cosine similarity at which two images are near-duplicates (default {DEFAULT_DUPLICATE_THRESHOLD}, "
        "measured: see the README)",
    )
    duplicates.add_argument("--format", choices=("table", "json"), default="table")
    add_runtime_option(duplicates)
    add_weights_option(duplicates)
    duplicates.set_defaults(run=run_duplicates)
