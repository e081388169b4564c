"""A trained model as a file a person can download and bring back: a zip of JSON and safetensors.

    manifest.json         what the model is: backbone, weights, classes, preprocessing, head shape,
                          the paths of the backbone modules it trained (`tuned`, maybe none),
                          training settings, a metrics summary, and the "not sure" threshold
                          (optional: older bundles lack it), and how its training images are
                          remembered (`familiarity`, core.finetune.familiarity; optional too)
    weights.safetensors   the tensors: "head.*" and, for each trained module, "backbone.<path>.*";
                          with `familiarity`, "familiarity.references" and "familiarity.validation"

No pickle anywhere, in either direction. A bundle comes from the internet, so importing reads
exactly those two members, with bounded sizes, through `json.loads` and safetensors (a JSON
header and raw tensor bytes) and nothing else: a member that is a pickle (or a PyTorch
checkpoint, which is one) is refused by its name or first bytes and never opened further. The
manifest is checked against the catalogue; its trained modules must be exactly those its training
settings train in that backbone (core.finetune.depth); every tensor's name, shape and dtype is
checked against the head and modules the manifest describes, before anything is loaded (strictly).
Version 1 bundles (a head, and at most the last block as "block.*") are still read.

`export_onnx` writes the complete model (backbone + trained modules + head) for use elsewhere.
"""

from __future__ import annotations

import io
import json
import math
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import safetensors.torch
import torch
import torch.nn as nn

from core.engines.onnx_export import export_module
from core.errors import ZooScopeError
from core.features.backbone import block_path, strip_head
from core.features.cut import feature_dim as stage_feature_dim
from core.features.cut import is_cut
from core.finetune import familiarity
from core.finetune.config import TrainConfig
from core.finetune.depth import BYTES_PER_TRAINABLE_PARAMETER, TRAINING_MEMORY_BUDGET, trained_paths
from core.finetune.heads import HEAD_TYPES, build_head, first_linear
from core.finetune.tail import private_copies
from core.finetune.threshold import check_threshold, fallback_threshold
from core.finetune.trained import TrainedModel
from core.models.building import build_on_meta
from core.models.catalog import ModelSpec, all_specs, spec_for_weights_id, weights_versions
from core.models.family_paths import get_layer
from core.models.keys import ModelKey
from core.models.loading import LoadedModel

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
MEMBERS = (MANIFEST, WEIGHTS)
MAX_MANIFEST_BYTES = 1 << 20
# The most a person may train (core.finetune.depth: a quarter of the training memory budget is the
# weights) and a generous head.
MAX_WEIGHTS_BYTES = TRAINING_MEMORY_BUDGET // BYTES_PER_TRAINABLE_PARAMETER * 4 + (64 << 20)

_COMMON_KEYS = ("format_version", "backbone", "weights_id", "classes", "preprocessing", "head")
_REQUIRED_KEYS = {
    1: (*_COMMON_KEYS, "block", "training", "metrics", "created"),
    2: (*_COMMON_KEYS, "tuned", "training", "metrics", "created"),
}
TUNED_PREFIX = "backbone."
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".bin", ".joblib", ".npy", ".npz")
_NEVER_LOADED = "pickles can run code and are never loaded"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member dates: the same model gives the same weights bytes


class BundleError(ZooScopeError):
    """A model bundle that cannot be imported; the message says why in one sentence."""


# --- export ---------------------------------------------------------------------------------------


def preprocessing(spec: ModelSpec) -> dict:
    """The weights' evaluation preprocessing as plain JSON values."""
    preset = spec.transforms()
    return {
        "resize": int(preset.resize_size[0]),
        "crop": int(preset.crop_size[0]),
        "mean": [float(v) for v in preset.mean],
        "std": [float(v) for v in preset.std],
        "interpolation": preset.interpolation.value,
    }


def _head_description(trained: TrainedModel) -> dict:
    kind = "linear" if isinstance(trained.head, nn.Linear) else "mlp"
    return {
        "type": kind,
        "in_features": trained.feature_dim,
        "hidden": first_linear(trained.head).out_features if kind == "mlp" else None,
        "num_classes": len(trained.classes),
    }


def manifest_for(trained: TrainedModel) -> dict:
    spec = trained.backbone_spec  # the weights version it was trained on: its own preprocessing
    return {
        "format_version": FORMAT_VERSION,
        "backbone": trained.backbone,
        "weights_id": trained.weights_id,
        "classes": list(trained.classes),
        "preprocessing": preprocessing(spec),
        "head": _head_description(trained),
        "tuned": list(trained.tuned),
        "training": trained.config.as_dict(),
        "metrics": {
            "val_accuracy": None if math.isnan(trained.val_accuracy) else float(trained.val_accuracy),
            "epochs_run": int(trained.epochs_run),
        },
        "threshold": float(trained.threshold),
        **({"familiarity": trained.familiarity.manifest()} if trained.familiarity is not None else {}),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _tensors(trained: TrainedModel) -> dict[str, torch.Tensor]:
    tensors = {f"head.{k}": v for k, v in trained.head.state_dict().items()}
    for path, module in trained.tuned.items():
        tensors.update({f"{TUNED_PREFIX}{path}.{k}": v for k, v in module.state_dict().items()})
    if trained.familiarity is not None:
        tensors.update(trained.familiarity.tensors())
    return {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}


def export_bundle(trained: TrainedModel) -> bytes:
    """The trained head (and trained backbone modules) as a zip: manifest.json + weights.safetensors."""
    manifest = json.dumps(manifest_for(trained), indent=2, sort_keys=False).encode("utf-8")
    weights = safetensors.torch.save(_tensors(trained), metadata={"format": "pt", "producer": "ZooScope"})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo(MANIFEST, _ZIP_TIME), manifest, compress_type=zipfile.ZIP_DEFLATED)
        archive.writestr(zipfile.ZipInfo(WEIGHTS, _ZIP_TIME), weights, compress_type=zipfile.ZIP_STORED)
    return buffer.getvalue()


# --- import ---------------------------------------------------------------------------------------


def _looks_like_pickle(head: bytes) -> bool:
    # Protocol 2+ starts with the PROTO opcode (0x80) and the protocol number.
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    if info.file_size > limit:
        raise BundleError(f"{info.filename} in the bundle is {info.file_size:,} bytes; the limit is {limit:,}.")
    with archive.open(info) as handle:
        content = handle.read(limit + 1)  # never more than the limit, whatever the header claims
    if len(content) > limit:
        raise BundleError(f"{info.filename} in the bundle is larger than the {limit:,}-byte limit.")
    return content


def _refuse_extra(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    name = info.filename
    is_pickle = name.lower().endswith(_PICKLE_SUFFIXES)
    if not is_pickle and not info.is_dir() and not info.flag_bits & 0x1:
        try:
            with archive.open(info) as handle:
                is_pickle = _looks_like_pickle(handle.read(2))  # the first two bytes only
        except Exception:  # noqa: BLE001 - unreadable: refused below all the same
            pass
    if is_pickle:
        raise BundleError(
            f"The bundle contains '{name}', a Python pickle; {_NEVER_LOADED}. "
            f"A ZooScope bundle holds only {MANIFEST} and {WEIGHTS}."
        )
    raise BundleError(
        f"The bundle contains '{name}', which is not part of a ZooScope bundle; "
        f"it must hold exactly {MANIFEST} and {WEIGHTS}."
    )


def _members(data: bytes) -> tuple[bytes, bytes]:
    """(manifest bytes, weights bytes), or BundleError."""
    if not data:
        raise BundleError("The file is empty; choose a ZooScope model bundle (.zip).")
    if not zipfile.is_zipfile(io.BytesIO(data)):
        if _looks_like_pickle(data[:2]):
            raise BundleError(f"The file is a Python pickle, not a ZooScope model bundle; {_NEVER_LOADED}.")
        raise BundleError("The file is not a ZooScope model bundle: it is not a zip archive.")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            names = [info.filename for info in infos]
            if len(names) != len(set(names)):
                raise BundleError("The bundle lists the same file twice; it is not a valid ZooScope model bundle.")
            if any(info.flag_bits & 0x1 for info in infos):
                raise BundleError("The bundle is password-protected; ZooScope bundles are never encrypted.")
            for info in infos:
                if info.filename not in MEMBERS:
                    _refuse_extra(archive, info)
            for member in MEMBERS:
                if member not in names:
                    raise BundleError(f"The bundle has no {member}; it is not a ZooScope model bundle.")
            manifest = _read_member(archive, archive.getinfo(MANIFEST), MAX_MANIFEST_BYTES)
            weights = _read_member(archive, archive.getinfo(WEIGHTS), MAX_WEIGHTS_BYTES)
    except BundleError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError):
        raise BundleError("The bundle is corrupt: its zip archive could not be read.") from None
    return manifest, weights


def _manifest(content: bytes) -> dict:
    if _looks_like_pickle(content[:2]):
        raise BundleError(f"{MANIFEST} is a Python pickle, not JSON; {_NEVER_LOADED}.")
    try:
        manifest = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise BundleError(f"{MANIFEST} in the bundle is not valid JSON.") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{MANIFEST} in the bundle is not a JSON object.")
    version = manifest.get("format_version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        readable = " and ".join(str(v) for v in READABLE_VERSIONS)
        raise BundleError(
            f"The bundle has format version {version!r}; this version of ZooScope reads versions {readable}."
        )
    if missing := [key for key in _REQUIRED_KEYS[version] if key not in manifest]:
        raise BundleError(f"{MANIFEST} in the bundle lacks {', '.join(missing)}.")
    return manifest


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_manifest(manifest: dict) -> tuple[ModelSpec, TrainConfig, dict[str, str]]:
    """The backbone, the training settings, and the trained modules (path -> tensor name prefix)."""
    backbone = manifest["backbone"]
    specs = all_specs()
    if not isinstance(backbone, str) or backbone not in specs:
        raise BundleError(f"The bundle was trained on '{backbone}', a model this app does not know.")
    spec = spec_for_weights_id(backbone, manifest["weights_id"])  # the version it was trained on, if this app has it
    if spec is None:
        versions = ", ".join(repr(version.weights_id) for version in weights_versions(backbone))
        raise BundleError(
            f"The bundle was trained on {backbone} with weights {manifest['weights_id']!r}; this app has {versions}."
        )
    if manifest["preprocessing"] != preprocessing(spec):
        raise BundleError(f"The bundle's preprocessing does not match {backbone}'s own; it cannot be used here.")
    classes = manifest["classes"]
    if (
        not isinstance(classes, list)
        or len(classes) < 2
        or not all(isinstance(c, str) and c.strip() for c in classes)
        or len(set(classes)) != len(classes)
    ):
        raise BundleError("The bundle's classes must be a list of 2 or more different, non-blank names.")
    head = manifest["head"]
    if not isinstance(head, dict) or head.get("type") not in HEAD_TYPES:
        raise BundleError(f"The bundle's head must be one of {', '.join(HEAD_TYPES)}.")
    if not _whole(head.get("in_features")) or head.get("num_classes") != len(classes):
        raise BundleError("The bundle's head does not match its classes (in_features / num_classes).")
    if head["type"] == "mlp" and not _whole(head.get("hidden")):
        raise BundleError("The bundle's mlp head has no valid hidden size.")
    training = manifest["training"]
    if not isinstance(training, dict):
        raise BundleError("The bundle's training settings are not a JSON object.")
    known = {name: training[name] for name in TrainConfig.__dataclass_fields__ if name in training}
    if manifest["format_version"] == 1 and known.get("mode") == "finetune":
        known["unfreeze"] = "last"  # version 1 trained the last block only
    try:
        config = TrainConfig(**known)
    except (ZooScopeError, TypeError) as error:
        reason = str(error).removeprefix("Invalid training settings: ")
        raise BundleError(f"The bundle's training settings are invalid: {reason}") from None
    tuned = _v1_block(manifest, spec, config) if manifest["format_version"] == 1 else _tuned(manifest, spec, config)
    metrics = manifest["metrics"]
    if not isinstance(metrics, dict):
        raise BundleError("The bundle's metrics are not a JSON object.")
    if "threshold" in manifest:
        try:
            check_threshold(manifest["threshold"])
        except ValueError as error:
            raise BundleError(f"The bundle's {error}.") from None
    if "familiarity" in manifest:
        try:
            familiarity.check_entry(manifest["familiarity"])
        except ValueError as error:
            raise BundleError(f"The bundle's {error}.") from None
    return spec, config, tuned


def _tuned(manifest: dict, spec: ModelSpec, config: TrainConfig) -> dict[str, str]:
    """Version 2: the trained modules must be none (the head alone was best) or exactly the ones the
    settings' depth trains in this backbone."""
    tuned = manifest["tuned"]
    if not isinstance(tuned, list) or not all(isinstance(path, str) for path in tuned):
        raise BundleError("The bundle's trained modules ('tuned') must be a list of module paths.")
    if not tuned:
        return {}
    try:
        expected = trained_paths(spec.name, config.depth)
    except ZooScopeError as error:
        raise BundleError(str(error)) from None
    if tuned != list(expected):
        raise BundleError(
            f"The bundle's trained modules do not fit {spec.name} trained to depth '{config.depth}' "
            f"({config.mode} mode): expected {', '.join(expected) or 'none'}."
        )
    return {path: f"{TUNED_PREFIX}{path}." for path in tuned}


def _v1_block(manifest: dict, spec: ModelSpec, config: TrainConfig) -> dict[str, str]:
    """Version 1: at most the family's last block, stored as "block.*", in finetune mode only."""
    block = manifest["block"]
    try:
        expected_block = block_path(spec) if block is not None else None
    except ZooScopeError as error:
        raise BundleError(str(error)) from None
    if block != expected_block or (block is None) != (config.mode == "fast"):
        raise BundleError(f"The bundle's trained block {block!r} does not fit {spec.name} ({config.mode} mode).")
    return {} if block is None else {block: "block."}


def _weights(content: bytes) -> dict[str, torch.Tensor]:
    # safetensors: an 8-byte little-endian header length, then a JSON header, then raw tensor bytes.
    header_size = int.from_bytes(content[:8], "little") if len(content) >= 8 else -1
    if not 0 < header_size <= len(content) - 8 or content[8:9] != b"{":
        if _looks_like_pickle(content[:2]) or content.startswith(b"PK\x03\x04"):
            raise BundleError(f"{WEIGHTS} is a Python pickle (a PyTorch checkpoint), not safetensors; {_NEVER_LOADED}.")
        raise BundleError(f"{WEIGHTS} in the bundle is not a valid safetensors file (its header is corrupt).")
    try:
        return safetensors.torch.load(content)
    except Exception:  # noqa: BLE001 - SafetensorError and friends: all mean "damaged"
        raise BundleError(f"{WEIGHTS} in the bundle is corrupt: its header or tensor data is invalid.") from None


def _expected(prefix: str, module: nn.Module) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    return {f"{prefix}.{k}": (tuple(v.shape), v.dtype) for k, v in module.state_dict().items()}


def _check_tensors(tensors: dict[str, torch.Tensor], expected: dict[str, tuple[tuple[int, ...], torch.dtype]]) -> None:
    if missing := sorted(set(expected) - set(tensors)):
        raise BundleError(f"{WEIGHTS} lacks tensors the manifest's model needs: {', '.join(missing[:5])}.")
    if unexpected := sorted(set(tensors) - set(expected)):
        raise BundleError(
            f"{WEIGHTS} holds tensors the manifest's model has no place for: {', '.join(unexpected[:5])}."
        )
    for name, (shape, dtype) in expected.items():
        tensor = tensors[name]
        if tuple(tensor.shape) != shape or tensor.dtype != dtype:
            raise BundleError(
                f"Tensor {name} in {WEIGHTS} is {tuple(tensor.shape)} {tensor.dtype}; "
                f"the manifest's model needs {shape} {dtype}."
            )
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise BundleError(f"Tensor {name} in {WEIGHTS} holds NaN or infinite values.")


def import_bundle(data: bytes, loaded_for: Callable[[ModelKey], LoadedModel]) -> TrainedModel:
    """A TrainedModel from bundle bytes, or BundleError. Only JSON and safetensors are ever parsed.

    `loaded_for(key)` gives the shared backbone (its model in the weights version the bundle was trained on);
    it is called only when the bundle holds trained backbone modules (whose untrained copies come from it).
    """
    manifest_bytes, weights_bytes = _members(bytes(data))
    manifest = _manifest(manifest_bytes)
    spec, config, tuned_prefixes = _check_manifest(manifest)
    tensors = _weights(weights_bytes)

    meta_model = build_on_meta(spec)
    feature_dim = strip_head(meta_model, spec)
    source = spec.name
    if is_cut(config.features_from):  # fast mode from a stage: its head reads that stage's features
        source = f"{spec.name}'s {config.features_from}"
        try:
            feature_dim = stage_feature_dim(spec, config.features_from)
        except ZooScopeError as error:
            raise BundleError(f"The bundle's training settings are invalid: {error}") from None
    head_info = manifest["head"]
    if head_info["in_features"] != feature_dim:
        raise BundleError(f"The bundle's head takes {head_info['in_features']} features; {source} gives {feature_dim}.")
    head = build_head(head_info["type"], feature_dim, len(manifest["classes"]), hidden=head_info.get("hidden") or 1)
    expected = _expected("head", head)
    for path, prefix in tuned_prefixes.items():
        expected.update(_expected(prefix.removesuffix("."), get_layer(meta_model, path, spec.name)))
    if "familiarity" in manifest:  # its training images' features: as many as the head takes
        expected.update(familiarity.expected_tensors(manifest["familiarity"], first_linear(head).in_features))
    _check_tensors(tensors, expected)
    try:
        familiar = (
            familiarity.Familiarity.from_bundle(manifest["familiarity"], tensors) if "familiarity" in manifest else None
        )
    except ValueError as error:
        raise BundleError(f"The bundle's {error}.") from None

    head.load_state_dict({k.removeprefix("head."): v for k, v in tensors.items() if k.startswith("head.")}, strict=True)
    tuned: dict[str, nn.Module] = {}
    if tuned_prefixes:
        shared = loaded_for(ModelKey(spec.name, weights=spec.weights_choice))
        copies = private_copies(shared, list(tuned_prefixes))  # the person's own tensors
        for path, prefix in tuned_prefixes.items():
            state = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
            copies[path].load_state_dict(state, strict=True)
            tuned[path] = copies[path].eval().requires_grad_(False)
    metrics = manifest["metrics"]
    accuracy = metrics.get("val_accuracy")
    epochs_run = metrics.get("epochs_run")
    classes = list(manifest["classes"])
    return TrainedModel(
        backbone=spec.name,
        weights_id=spec.weights_id,
        classes=classes,
        config=config,
        head=head.eval().requires_grad_(False),
        tuned=tuned,
        epochs_run=epochs_run if _whole(epochs_run) else 0,
        val_accuracy=float(accuracy)
        if isinstance(accuracy, int | float) and not isinstance(accuracy, bool)
        else math.nan,
        threshold=float(manifest["threshold"]) if "threshold" in manifest else fallback_threshold(len(classes)),
        familiarity=familiar,
    )


# --- ONNX -----------------------------------------------------------------------------------------


def onnx_file_bytes(path: Path, trained: TrainedModel, spec: ModelSpec) -> bytes:
    """The ONNX model at `path` (weights in an external file or not) as one file's bytes, with the
    classes and preprocessing in its metadata."""
    import onnx

    model = onnx.load(str(path))  # reads any external weights file back into the model
    onnx.helper.set_model_props(
        model,
        {
            "classes": json.dumps(list(trained.classes)),
            "preprocessing": json.dumps(preprocessing(spec)),
            "backbone": trained.backbone,
            "weights_id": trained.weights_id,
            "producer": "ZooScope",
        },
    )
    return model.SerializeToString()


def export_onnx(trained: TrainedModel, loaded: LoadedModel) -> bytes:
    """The complete model as ONNX: input "image" (N, 3, S, S), already preprocessed; output "logits" (N, C).

    The batch axis is dynamic. The classes and preprocessing travel in the model's metadata.
    core.finetune.deploy adds the int8 version and each one's measured agreement.
    """
    with tempfile.TemporaryDirectory(prefix="zooscope-onnx-") as folder:
        path = export_module(trained.full_module(loaded), loaded.spec.input_size, Path(folder) / "model.onnx")
        return onnx_file_bytes(path, trained, loaded.spec)
