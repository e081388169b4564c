"""The verified store of exported ONNX files, in `ZOOSCOPE_CACHE_DIR` (default ~/.cache/zooscope).

    <cache>/onnx/<model>/<key>/<artifact>/manifest.json, and the artifact's files

`key` names what the files were made from: the weights file's SHA-256 and the exporter's version
(ZooScope's export format, torch, onnxscript, the opset), so new weights or a new exporter never
meet an old file. An artifact ("fp32", "int8", "features") is written into a temporary folder
beside its place and renamed into place whole, so a reader sees all of it or nothing; its manifest
lists each file's SHA-256 and byte count. Every read hashes each file against the manifest: a
truncated or altered file is never handed to ONNX Runtime, its artifact is removed and made again.

An export or a check that failed is stored too (a manifest with `failed` and no files), so the
next process keeps PyTorch for that model at once instead of exporting it again.

A cache folder that cannot be written falls back to a private temporary folder, with a note.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

CACHE_DIR_ENV = "ZOOSCOPE_CACHE_DIR"
DEFAULT_CACHE_DIR = Path("~/.cache/zooscope")
MANIFEST = "manifest.json"
FORMAT = 1
_CHUNK = 1 << 20

_log = logging.getLogger(__name__)


# --- where ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheRoot:
    path: Path
    note: str | None = None  # set when the configured folder could not be written


_fallbacks: dict[Path, CacheRoot] = {}
_fallbacks_lock = threading.Lock()


def configured_dir() -> Path:
    raw = os.environ.get(CACHE_DIR_ENV, "").strip()
    return Path(raw).expanduser() if raw else DEFAULT_CACHE_DIR.expanduser()


def _writable(folder: Path) -> str | None:
    """None if files can be created in `folder` (made if missing), else the reason."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as error:
        return error.strerror or str(error)
    return None


def cache_root() -> CacheRoot:
    """The cache folder: ZOOSCOPE_CACHE_DIR (default ~/.cache/zooscope), or, where that cannot be
    written, one private temporary folder for this process, with a note that says so."""
    folder = configured_dir()
    problem = _writable(folder)
    if problem is None:
        return CacheRoot(folder)
    with _fallbacks_lock:
        if folder not in _fallbacks:
            fallback = Path(tempfile.mkdtemp(prefix="zooscope-cache-"))  # private (0700), never shared
            note = (
                f"The cache folder {folder} cannot be written ({problem}); exported ONNX files go to {fallback} "
                f"for now. Set {CACHE_DIR_ENV} to a writable folder to keep them."
            )
            _log.warning(note)
            _fallbacks[folder] = CacheRoot(fallback, note)
        return _fallbacks[folder]


# --- what a file is -------------------------------------------------------------------------------

_digests: dict[tuple[str, int, int], str] = {}
_digests_lock = threading.Lock()


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def weights_sha256(path: Path) -> str:
    """The weights file's SHA-256, hashed once per process while the file is unchanged (size, mtime)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _digests_lock:
        if key in _digests:
            return _digests[key]
    value = sha256_file(path)
    with _digests_lock:
        _digests[key] = value
    return value


def cache_key(weights_digest: str, exporter: str) -> str:
    """What the exported files are made from, in 16 hex digits."""
    return hashlib.sha256(f"{weights_digest}\n{exporter}".encode()).hexdigest()[:16]


# --- artifacts ------------------------------------------------------------------------------------


def artifact_folder(root: Path, model: str, key: str, artifact: str) -> Path:
    return root / "onnx" / model / key / artifact


class DamagedArtifact(Exception):
    """A cached file does not match its manifest (truncated, altered, missing)."""


def read_manifest(folder: Path) -> dict | None:
    """The artifact's manifest once every file it lists has been hashed and matched; None if there is
    no artifact (yet); DamagedArtifact if a file or the manifest is not what was written."""
    path = folder / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
        if manifest.get("format") != FORMAT or not isinstance(files, dict):
            raise DamagedArtifact(f"{path} is not a manifest this version writes")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DamagedArtifact(f"{path} cannot be read ({error})") from None
    for name, expected in files.items():
        file = folder / name
        if Path(name).name != name or not file.is_file():
            raise DamagedArtifact(f"{file} is missing")
        if file.stat().st_size != expected.get("bytes") or sha256_file(file) != expected.get("sha256"):
            raise DamagedArtifact(f"{file} does not match its SHA-256 in {MANIFEST}")
    return manifest


def remove(folder: Path) -> None:
    """Take a damaged artifact out of the way (renamed first, so no reader meets half of it)."""
    if not folder.exists():
        return
    aside = folder.with_name(f".removed-{folder.name}-{os.getpid()}-{threading.get_ident()}")
    with contextlib.suppress(OSError):
        os.replace(folder, aside)
        folder = aside
    shutil.rmtree(folder, ignore_errors=True)


def write(folder: Path, make: Callable[[Path], dict], *, describe: dict) -> dict:
    """Make an artifact atomically: `make(temporary_folder)` writes its files there and returns a report
    (a JSON-able dict); every file is hashed into the manifest, then the folder is renamed into place.

    If another process put the same artifact in place meanwhile, its (verified) manifest wins.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".partial-{folder.name}-", dir=folder.parent))
    try:
        report = make(staging)
        files = {
            file.name: {"sha256": sha256_file(file), "bytes": file.stat().st_size}
            for file in sorted(staging.iterdir())
            if file.is_file()
        }
        manifest = {
            "format": FORMAT,
            **describe,
            "files": files,
            "report": report,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        try:
            os.rename(staging, folder)
        except OSError:  # another process was first: keep its artifact if it is whole
            theirs = read_manifest(folder)
            if theirs is None:
                raise
            return theirs
        return manifest
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def write_failure(folder: Path, reason: str, *, describe: dict) -> dict:
    """Remember that this artifact cannot be made (a failed export or check): no files, the reason."""
    return write(folder, lambda staging: {}, describe={**describe, "failed": reason})
