"""Torch's process-global state under many sessions at once: every visitor is a thread in one process.

While one session exports a model to ONNX (torch.export sets torch.compiler.is_exporting() for the
whole process), other sessions build models on the meta device (Grad-CAM's private views, Inside,
fine-tuning). Without core.runtime.TORCH_GLOBAL_STATE this raised KeyError('custom') inside
torch.fx.traceback.annotate (measured: 29 times in two minutes of three builders beside an export).
"""

from __future__ import annotations

import threading

import torch
import torch.nn as nn

from core import runtime
from core.engines.onnx_export import export_module
from core.models.building import build_on_meta
from core.models.catalog import get_spec

BUILDERS = 3
EXPORTS = 2


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    ).eval()


def test_building_on_meta_beside_onnx_exports_never_races(tmp_path):
    spec = get_spec("efficientnet_lite0")  # timm's init runs dynamo-disabled functions: the racing path
    errors: list[str] = []
    built = [0]
    done = threading.Event()

    def builder():
        while not done.is_set():
            try:
                build_on_meta(spec)
                built[0] += 1
            except Exception as error:  # noqa: BLE001 - every failure is the finding
                errors.append(f"build: {error!r}")

    def exporter():
        try:
            for index in range(EXPORTS):
                export_module(small_cnn(), 32, tmp_path / f"model{index}.onnx")
        except Exception as error:  # noqa: BLE001
            errors.append(f"export: {error!r}")
        finally:
            done.set()

    threads = [threading.Thread(target=builder) for _ in range(BUILDERS)] + [threading.Thread(target=exporter)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads), "a thread is stuck"
    assert not errors, errors[:5]
    assert built[0] > 0
    assert all((tmp_path / f"model{index}.onnx").exists() for index in range(EXPORTS))


def test_the_lock_is_reentrant_and_shared():
    # The thread-count setting and a meta build may nest (a builder that configures threads): no deadlock.
    with runtime.TORCH_GLOBAL_STATE:
        build_on_meta(get_spec("resnet18"))
        runtime.configure_threads()


# --- torch.fx tracing: it patches torch.nn.Module.__call__ and __getattr__ for the whole process ----

TRACES = 6
FORWARDERS = 2


def test_forward_passes_beside_fx_traces_stay_real():
    # Inside's anatomy traces models with torch.fx while other visitors classify: a forward pass in
    # another thread runs through the tracer's patched Module.__call__ and must neither raise
    # ("module is not installed as a submodule") nor come back as a Proxy.
    from core.inside import dataflow

    original_call, original_getattr = nn.Module.__call__, nn.Module.__getattr__
    model = small_cnn()
    image = torch.zeros(2, 3, 16, 16)
    with torch.no_grad():
        expected = model(image)
    errors: list[str] = []
    forwards = [0]
    done = threading.Event()

    def forwarder():
        while not done.is_set():
            try:
                with torch.no_grad():
                    out = model(image)
                if not isinstance(out, torch.Tensor) or not torch.equal(out, expected):
                    errors.append(f"forward gave {type(out).__name__}")
                forwards[0] += 1
            except Exception as error:  # noqa: BLE001 - every failure is the finding
                errors.append(f"forward: {error!r}")

    def tracer(count: int):
        try:
            for _ in range(count):
                flow = dataflow.analyse(build_on_meta(get_spec("resnet18")), 64)
                if flow.depth != 18:
                    errors.append(f"trace: depth {flow.depth}")
        except Exception as error:  # noqa: BLE001
            errors.append(f"trace: {error!r}")

    forwarders = [threading.Thread(target=forwarder) for _ in range(FORWARDERS)]
    tracers = [threading.Thread(target=tracer, args=(TRACES // 2,)) for _ in range(2)]
    for thread in forwarders + tracers:
        thread.start()
    for thread in tracers:
        thread.join(timeout=300)
    done.set()
    for thread in forwarders:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in forwarders + tracers), "a thread is stuck"
    assert not errors, errors[:5]
    assert forwards[0] > 0
    # Two traces at once would restore each other's patches: the process must end with torch's own.
    assert nn.Module.__call__ is original_call and nn.Module.__getattr__ is original_getattr


def test_stdout_swapped_by_many_sessions_at_once_comes_back_to_the_process():
    """onnxruntime's calibrator and converter print progress; quiet_stdout swaps sys.stdout for a buffer. Two
    sessions quantizing at once each swap it; interleaved, the second could restore the first's buffer for good."""
    import sys
    import time

    from core.engines.quantize import quiet_stdout

    before = sys.stdout
    errors: list[str] = []

    def quiet_many_times() -> None:
        for _ in range(50):
            with quiet_stdout():
                print("calibrating…")
                if sys.stdout is before:
                    errors.append("stdout was not swapped inside")
                time.sleep(0.0005)

    threads = [threading.Thread(target=quiet_many_times) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sys.stdout is before and not errors
