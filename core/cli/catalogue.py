"""`models` (the catalogue) and `inspect` (a model's anatomy, what each fine-tuning depth would train,
and optionally its stage maps)."""

from __future__ import annotations

import argparse
import json
import sys

import pandas as pd

from core.cli.common import read_file
from core.errors import ImageError, ZooScopeError
from core.finetune.depth import trainable_by_depth
from core.images import decode_image
from core.inside.anatomy import anatomy
from core.inside.stage_maps import stage_maps
from core.models import weights
from core.models.catalog import all_specs, curated_specs, get_spec
from core.models.loading import load_model
from core.models.versions import version_rows
from core.preprocessing import decode_side
from core.runtime import pick_device


def run_models(args: argparse.Namespace) -> int:
    specs = all_specs().values() if args.all else curated_specs()
    if args.versions:  # one row per published weights version, for the models with several
        rows = version_rows(spec.name for spec in specs)
    else:
        rows = [{**spec.row(), "available_offline": weights.is_available(spec)} for spec in specs]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        print(pd.DataFrame(rows).to_string(index=False))
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    if (args.image is None) != (args.save_maps is None):
        raise ZooScopeError("--image and --save-maps go together: the photo to look at and the .npz file to write.")
    found = anatomy(get_spec(args.model).name)
    if args.image is not None:
        data = read_file(args.image, "image")
        try:
            picture = decode_image(data, min_side=decode_side([get_spec(args.model).transforms()]))
        except ImageError as error:
            raise ImageError(f"{args.image}: {error}") from None
        maps = stage_maps(load_model(args.model, pick_device()), picture)
        maps.save(args.save_maps)
        note = f"stage maps of {args.image} written to {args.save_maps} (input + {len(maps.stages)} stages)"
        print(note, file=sys.stderr if args.format == "json" else sys.stdout)
    if args.format == "json":
        # What each fine-tuning depth would train, from depth's cuts on the meta device (None: it can't be cut).
        print(json.dumps({**found.as_json(), "unfreeze": trainable_by_depth(found.model)}, indent=2))
        return 0
    print(
        f"{found.model} ({found.family}): {found.params:,} parameters, {found.gflops:.2f} GFLOPS at "
        f"{found.input_size} x {found.input_size}, {found.skip_connections} skip connections, depth {found.depth}"
    )
    frame = found.stages_frame().drop(columns=["params_m"])
    print(frame.round({"gflops": 3}).to_string(index=False))
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    models = commands.add_parser("models", help="list the model catalogue")
    models.add_argument("--all", action="store_true", help="every torchvision classifier, not only the curated set")
    models.add_argument("--format", choices=("table", "json"), default="table")
    models.add_argument(
        "--versions", action="store_true", help="each weights version (for --weights) of the models that have several"
    )
    models.set_defaults(run=run_models)

    inspect = commands.add_parser("inspect", help="a model's stages, shapes, parameters, GFLOPS and skip connections")
    inspect.add_argument("model", metavar="MODEL", help="catalogue name (no weights needed)")
    inspect.add_argument("--format", choices=("table", "json"), default="table")
    inspect.add_argument("--image", metavar="PATH", help="a photo to run through the model (needs its weights)")
    inspect.add_argument("--save-maps", metavar="FILE.npz", help="with --image: each stage's mean activation map")
    inspect.set_defaults(run=run_inspect)
