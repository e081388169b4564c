"""core.runtime: torch's CPU threads from the cgroup quota, the CPUs we may use, or the environment."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from core import runtime
from core.runtime import cgroup_cpu_quota, configure_threads, parse_cpu_max, thread_count


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """configure_threads changes process-wide torch state: put it back for the tests after us."""
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


# --- cpu.max --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        ("max 100000\n", None),  # no limit (the common case outside containers)
        ("max", None),
        ("200000 100000\n", 2.0),
        ("100000 100000", 1.0),
        ("150000 100000", 1.5),
        ("50000 100000", 0.5),
        ("300000 200000", 1.5),  # a non-default period
        ("100000", 1.0),  # period omitted: the kernel's default 100000
        ("", None),
        ("garbage here", None),
        ("-1 100000", None),
        ("100000 0", None),
    ],
)
def test_parse_cpu_max(text: str, cpus: float | None):
    assert parse_cpu_max(text) == cpus


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_quota_from_cgroup_v2_file(tmp_path: Path):
    cpu_max = write(tmp_path / "cpu.max", "200000 100000\n")
    assert cgroup_cpu_quota(cpu_max, tmp_path / "no_quota", tmp_path / "no_period") == 2.0


def test_unlimited_cgroup_v2_file(tmp_path: Path):
    cpu_max = write(tmp_path / "cpu.max", "max 100000\n")
    assert cgroup_cpu_quota(cpu_max, tmp_path / "no_quota", tmp_path / "no_period") is None


def test_no_cgroup_files_means_no_quota(tmp_path: Path):
    assert cgroup_cpu_quota(tmp_path / "cpu.max", tmp_path / "quota", tmp_path / "period") is None


def test_cgroup_v1_files_when_v2_is_missing(tmp_path: Path):
    quota = write(tmp_path / "cpu.cfs_quota_us", "150000\n")
    period = write(tmp_path / "cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_quota(tmp_path / "missing", quota, period) == 1.5


def test_cgroup_v1_unlimited(tmp_path: Path):
    quota = write(tmp_path / "cpu.cfs_quota_us", "-1\n")
    period = write(tmp_path / "cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_quota(tmp_path / "missing", quota, period) is None


def test_quota_of_this_machine_is_a_positive_number_or_none():
    quota = cgroup_cpu_quota()
    assert quota is None or quota > 0


# --- thread count ---------------------------------------------------------------------------------


def count(env: dict[str, str] | None = None, *, quota: float | None, cpus: int) -> int:
    return thread_count(env or {}, quota=lambda: quota, cpus=lambda: cpus)


@pytest.mark.parametrize(
    ("quota", "cpus", "threads"),
    [
        (None, 2, 2),  # no quota: every CPU we may run on
        (None, 1, 1),
        (None, 64, 64),
        (2.0, 64, 2),  # a container on a big host: the quota, not the host's cores
        (1.0, 64, 1),
        (1.5, 64, 2),  # rounded up
        (0.5, 64, 1),  # never below one
        (8.0, 2, 2),  # a generous quota cannot add CPUs the affinity mask forbids
    ],
)
def test_threads_follow_quota_and_cpus(quota: float | None, cpus: int, threads: int):
    assert count(quota=quota, cpus=cpus) == threads


def test_env_override_wins():
    assert count({"ZOOSCOPE_TORCH_THREADS": "3"}, quota=1.0, cpus=64) == 3
    assert count({"ZOOSCOPE_TORCH_THREADS": " 1 "}, quota=None, cpus=16) == 1


@pytest.mark.parametrize("raw", ["zero", "0", "-2", "1.5"])
def test_bad_env_override_is_ignored_with_a_warning(raw: str, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger="core.runtime"):
        assert count({"ZOOSCOPE_TORCH_THREADS": raw}, quota=2.0, cpus=8) == 2
    assert "ZOOSCOPE_TORCH_THREADS" in caplog.text


def test_omp_num_threads_is_respected_below_our_own_variable():
    assert count({"OMP_NUM_THREADS": "1"}, quota=None, cpus=8) == 1
    assert count({"OMP_NUM_THREADS": "1", "ZOOSCOPE_TORCH_THREADS": "4"}, quota=None, cpus=8) == 4
    assert count({"OMP_NUM_THREADS": "lots"}, quota=None, cpus=8) == 8


def test_thread_count_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ZOOSCOPE_TORCH_THREADS", "1")
    assert thread_count() == 1


def test_usable_cpus_is_positive():
    assert runtime.usable_cpus() >= 1


# --- configure_threads / pick_device ---------------------------------------------------------------


def test_configure_threads_sets_torch(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ZOOSCOPE_TORCH_THREADS", "1")
    assert configure_threads(force=True) == 1
    assert torch.get_num_threads() == 1


def test_configure_threads_runs_once_unless_forced(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ZOOSCOPE_TORCH_THREADS", "1")
    configure_threads(force=True)
    monkeypatch.setenv("ZOOSCOPE_TORCH_THREADS", "2")
    assert configure_threads() == 1  # already configured: the first answer stands
    assert torch.get_num_threads() == 1
    assert configure_threads(force=True) == 2
    assert torch.get_num_threads() == 2


def test_late_interop_setting_is_not_an_error(monkeypatch: pytest.MonkeyPatch):
    """torch refuses inter-op changes once parallel work ran (it has, in this process): no raise."""

    def refuse(_: int) -> None:
        raise RuntimeError("Error: cannot set number of interop threads after parallel work has started")

    monkeypatch.setattr(torch, "set_num_interop_threads", refuse)
    monkeypatch.setenv("ZOOSCOPE_TORCH_THREADS", "1")
    assert configure_threads(force=True) == 1


def test_pick_device_configures_threads_once(monkeypatch: pytest.MonkeyPatch):
    calls = []
    monkeypatch.setattr(runtime, "configure_threads", lambda **kwargs: calls.append(kwargs) or 1)
    runtime.pick_device.cache_clear()
    try:
        first = runtime.pick_device()
        second = runtime.pick_device()
    finally:
        runtime.pick_device.cache_clear()
    assert first == second == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert len(calls) == 1


def test_device_label_names_the_threads():
    assert f"torch uses {torch.get_num_threads()}" in runtime.device_label(torch.device("cpu"))


def test_available_cpus_ignores_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ZOOSCOPE_TORCH_THREADS", "7")
    assert runtime.available_cpus(quota=lambda: 1.5, cpus=lambda: 64) == 2
    assert runtime.available_cpus() >= 1


# --- which engine runs a model ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "device", "engine"),
    [
        ("auto", "cpu", "onnx"),
        ("onnx", "cpu", "onnx"),
        ("int8", "cpu", "int8"),
        ("torch", "cpu", "torch"),
        ("auto", "cuda", "torch"),  # the GPU path is PyTorch's, whatever was asked
        ("onnx", "cuda", "torch"),
        ("int8", "cuda", "torch"),
        ("torch", "cuda", "torch"),
    ],
)
def test_resolve_runtime(requested: str, device: str, engine: str):
    assert runtime.resolve_runtime(requested, device) == engine


def test_resolve_runtime_refuses_an_unknown_request():
    with pytest.raises(ValueError, match="auto, torch, onnx, int8"):
        runtime.resolve_runtime("tensorrt", "cpu")


@pytest.mark.parametrize(("raw", "value"), [("", "auto"), ("ONNX", "onnx"), (" int8 ", "int8"), ("torch", "torch")])
def test_requested_runtime_reads_the_environment(raw: str, value: str):
    assert runtime.requested_runtime({runtime.RUNTIME_ENV: raw}) == value


def test_an_unknown_runtime_in_the_environment_warns_and_means_auto(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING):
        assert runtime.requested_runtime({runtime.RUNTIME_ENV: "tpu"}) == "auto"
    assert "choose one of auto, torch, onnx, int8" in caplog.text


def test_parse_runtime_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown runtime 'fast'; choose one of auto, torch, onnx, int8"):
        runtime.parse_runtime("fast")


def test_onnx_runtime_threads_follow_torchs():
    torch.set_num_threads(1)
    assert runtime.onnx_threads() == 1
    torch.set_num_threads(2)
    assert runtime.onnx_threads() == 2


@pytest.mark.parametrize(
    ("agreement", "int8_ms", "fp32_ms", "recommended", "says"),
    [
        (1.0, 4.0, 8.0, True, "2.0x faster"),
        (0.95, 4.0, 8.0, True, "95%"),  # the goal itself is enough
        (0.949, 4.0, 8.0, False, "only 94.9%"),
        (1.0, 9.0, 8.0, False, "slower than fp32 here (9.0 vs 8.0 ms)"),
        (0.5, 9.0, 8.0, False, "slower than fp32 here (9.0 vs 8.0 ms); same top-1 as fp32 on only 50.0%"),
    ],
)
def test_int8_verdict(agreement: float, int8_ms: float, fp32_ms: float, recommended: bool, says: str):
    verdict, reason = runtime.int8_verdict(agreement, int8_ms, fp32_ms)
    assert verdict is recommended and says in reason


def test_memory_budget_from_the_environment():
    assert runtime.memory_budget_mb({}) == runtime.DEFAULT_MEMORY_BUDGET_MB == 1500
    assert runtime.memory_budget_mb({runtime.MEMORY_BUDGET_ENV: " 250 "}) == 250
    assert runtime.memory_budget_mb({runtime.MEMORY_BUDGET_ENV: "inf"}) == float("inf")  # no limit
    for bad in ("lots", "0", "-5", "nan"):
        assert runtime.memory_budget_mb({runtime.MEMORY_BUDGET_ENV: bad}) == runtime.DEFAULT_MEMORY_BUDGET_MB


def test_memory_estimate_is_the_weights_file_a_quarter_for_int8():
    assert runtime.memory_estimate_mb(100.0, None) == runtime.memory_estimate_mb(100.0, "onnx") == 100.0
    assert runtime.memory_estimate_mb(100.0, "int8") == 25.0
