"""core.models.weights without a network: the lack of one is learned once, expires, and reads well. All offline."""

from __future__ import annotations

import errno
import socket
import threading
import urllib.error
import urllib.request

import pytest

from core.errors import NetworkUnavailable, WeightsUnavailable
from core.models import weights
from core.models.catalog import get_spec
from tests.unit.test_weights import FakeResponse, assert_helpful, leftovers, named_for, no_network, spec_for  # noqa: F401

PAYLOAD = b"not really tensors, but bytes with a known SHA-256 " * 2000  # ~100 KB


# --- no network: learned once ---------------------------------------------------------------------


@pytest.fixture
def refusing_urlopen(monkeypatch):
    """`refuse(error)`: urlopen raises `error` from now on; returns the list of URLs it was asked for."""
    calls: list[str] = []

    def refuse(error: BaseException) -> list[str]:
        def urlopen(url, timeout):
            calls.append(url)
            raise error

        monkeypatch.setattr(urllib.request, "urlopen", urlopen)
        return calls

    return refuse


def test_no_network_is_learned_once_and_later_downloads_fail_at_once(refusing_urlopen, hub_checkpoints):
    calls = refusing_urlopen(urllib.error.URLError(socket.gaierror(socket.EAI_NONAME, "Name or service not known")))
    assert weights.can_download()
    with pytest.raises(NetworkUnavailable) as first:
        weights.resolve(get_spec("resnet50"))
    assert len(calls) == 1
    assert "could not be looked up" in weights.network_down()
    assert not weights.can_download()

    vgg = get_spec("vgg16")
    with pytest.raises(NetworkUnavailable) as second:
        weights.resolve(vgg)
    assert len(calls) == 1, "the second model's download tried the network again"
    for info in (first, second):
        assert str(info.value).startswith("There is no network here: the download server's name could not be")
    assert_helpful(str(second.value), vgg, hub_checkpoints)
    assert leftovers(hub_checkpoints) == []


def test_forgetting_the_failure_tries_the_network_again(refusing_urlopen, hub_checkpoints):
    calls = refusing_urlopen(urllib.error.URLError(ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")))
    with pytest.raises(NetworkUnavailable, match="refused"):
        weights.resolve(get_spec("resnet50"))
    weights.forget_network_failure()
    assert weights.can_download()
    with pytest.raises(NetworkUnavailable):
        weights.resolve(get_spec("resnet50"))
    assert len(calls) == 2


def test_a_download_that_works_after_a_failure_clears_it(refusing_urlopen, monkeypatch, tmp_path):
    refusing_urlopen(urllib.error.URLError(socket.gaierror(socket.EAI_AGAIN, "Temporary failure")))
    with pytest.raises(NetworkUnavailable):
        weights.download("https://weights.invalid/x.pth", tmp_path / named_for(PAYLOAD))
    weights.forget_network_failure()
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: FakeResponse(PAYLOAD))
    weights.download("https://weights.invalid/x.pth", tmp_path / named_for(PAYLOAD))
    assert weights.network_down() is None


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (urllib.error.URLError(socket.gaierror(socket.EAI_NONAME, "Name or service not known")), "looked up"),
        (urllib.error.URLError(TimeoutError("timed out")), "did not answer within 2 s"),
        (TimeoutError("timed out"), "did not answer within 2 s"),  # no response headers in time: not wrapped
        (urllib.error.URLError(ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")), "refused"),
        (urllib.error.URLError(OSError(errno.ENETUNREACH, "Network is unreachable")), "unreachable"),
        (urllib.error.URLError(OSError(errno.EHOSTUNREACH, "No route to host")), "unreachable"),
    ],
    ids=["dns", "connect-timeout", "response-timeout", "refused", "net-unreachable", "host-unreachable"],
)
def test_failures_for_lack_of_network(refusing_urlopen, error, words):
    refusing_urlopen(error)
    with pytest.raises(NetworkUnavailable, match=words):
        weights.resolve(get_spec("resnet18"), timeout=2)
    assert words in weights.network_down()


@pytest.mark.parametrize(
    "error",
    [
        urllib.error.HTTPError("https://weights.invalid/x.pth", 404, "Not Found", {}, None),
        urllib.error.HTTPError("https://weights.invalid/x.pth", 503, "Service Unavailable", {}, None),
        urllib.error.URLError("unknown url type: htps"),
        urllib.error.URLError(ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")),
    ],
    ids=["404", "503", "bad-url", "reset"],
)
def test_answers_and_other_failures_are_not_lack_of_network(refusing_urlopen, error):
    calls = refusing_urlopen(error)
    for _ in range(2):
        with pytest.raises(WeightsUnavailable) as info:
            weights.resolve(get_spec("resnet18"))
        assert not isinstance(info.value, NetworkUnavailable)
    assert weights.network_down() is None
    assert len(calls) == 2, "every download tried again: the network was not marked down"


def test_real_name_lookup_failure_is_looked_up_once(monkeypatch, hub_checkpoints):
    """Through the real urllib path: the second and third models never reach the resolver."""
    lookups = []

    def refuse(*args, **kwargs):
        lookups.append(args[0])
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    for name in ("resnet50", "vgg16", "efficientnet_b0"):
        with pytest.raises(NetworkUnavailable):
            weights.resolve(get_spec(name), timeout=2)
    assert len(lookups) == 1


def test_offline_setting_is_not_a_network_failure(monkeypatch, refusing_urlopen):
    calls = refusing_urlopen(AssertionError("ZOOSCOPE_OFFLINE must not touch the network"))
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    with pytest.raises(WeightsUnavailable) as info:
        weights.resolve(get_spec("resnet50"))
    assert not isinstance(info.value, NetworkUnavailable)
    assert calls == [] and weights.network_down() is None
    assert not weights.can_download()


def test_network_status_expires_so_a_passing_outage_is_retried():
    now = [1000.0]
    status = weights.NetworkStatus(recheck_after_s=300, clock=lambda: now[0])
    assert status.down() is None
    status.mark_down("the network is unreachable")
    now[0] += 299
    assert status.down() == "the network is unreachable"
    now[0] += 1
    assert status.down() is None
    status.mark_down("again")
    status.forget()
    assert status.down() is None


def test_network_status_is_learned_once_under_concurrent_downloads(refusing_urlopen, hub_checkpoints):
    """Threads that start after the failure is known never wait on the network."""
    calls = refusing_urlopen(urllib.error.URLError(socket.gaierror(socket.EAI_NONAME, "Name or service not known")))
    with pytest.raises(NetworkUnavailable):
        weights.resolve(get_spec("resnet50"))
    failures = []

    def load(name: str) -> None:
        try:
            weights.resolve(get_spec(name))
        except NetworkUnavailable as error:
            failures.append(error)

    threads = [threading.Thread(target=load, args=(name,)) for name in ("vgg16", "resnet18", "vit_b_16") * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(failures) == len(threads) and len(calls) == 1
