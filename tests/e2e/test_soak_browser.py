"""A short soak: the app as a small host runs it (a 2.0 GB memory cgroup where the OS allows it, else a soft
limit; two cores), with one browser session per heavy flow at once: fine-tuning the whole network, Features
with three backbones, Compare with Grad-CAM, Inside's stage maps, and Classify with a bad file.

Zero exceptions (in the pages and in the app's log), nothing killed, every session finishes. `make bench`
runs the long one (bench/bench_soak.py: 12 sessions, each flow's time against its time alone).
"""

from __future__ import annotations

import pytest

from bench.soak import ORDER, soak

pytestmark = pytest.mark.e2e

MEMORY_LIMIT_MB = 2000


@pytest.fixture(scope="module")
def feature_views_in_onnx_runtime(bundled_models_in_onnx_runtime):
    """The offline trio's feature views exported into the run's cache before the app starts (the Features
    flow embeds with all three), as a restarted server finds them."""
    from core.engines.choice import load_handle
    from core.features.embedding import embedder_for
    from core.models.bundled import NAMES
    from core.models.keys import ModelKey

    for name in NAMES:
        handle = load_handle(ModelKey(name), runtime_choice="onnx")
        assert embedder_for(handle.torch, runtime=handle.runtime).runtime == "onnx", name


def test_every_heavy_flow_at_once_on_a_small_host(browser, feature_views_in_onnx_runtime, tmp_path):
    del browser  # only its check: Chromium is here (the soak drives its own, asynchronously)
    report = soak(
        sessions=len(ORDER),
        memory_limit_mb=MEMORY_LIMIT_MB,
        cores=2,
        alone=False,
        timeout_s=420,
        folder=tmp_path,
        flow_options={"finetune": {"epochs": 3}},  # the whole network still trains, for a short while
    )
    print(
        f"soak ({report.limit_kind}): peak RSS {report.peak_rss_mb:.0f} MB (anonymous {report.peak_anon_mb:.0f}), "
        + ", ".join(f"{result.flow} {result.seconds:.0f} s" for result in report.together)
    )
    assert report.alive, report.log_tail
    assert report.oom_kills == 0
    assert sorted(result.flow for result in report.together) == sorted(ORDER)
    assert not report.errors, [(result.flow, result.error) for result in report.errors]
    assert report.tracebacks == 0, report.log_tail
    assert 0 < report.peak_anon_mb < MEMORY_LIMIT_MB
