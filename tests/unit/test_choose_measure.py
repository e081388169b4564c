"""One catalogue model measured on this machine (tiny models, short budgets), the timing loop on a fake
clock, and the machine key a resumed run compares."""

from __future__ import annotations

import pytest

from core.choose import measure
from core.choose.machine import Machine, this_machine
from core.choose.measure import MIB, MIN_RUNS, Settings, measure_model, median_forward_ms
from core.models.catalog import get_spec

FAST = Settings(runs=3, seconds=0.5, throughput_runs=1)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def machine() -> Machine:
    return this_machine(1)


# --- measure_model --------------------------------------------------------------------------------


def test_a_tiny_model_measured_in_torch(machine):
    spec = get_spec("mobilenet_v3_small")
    (row,) = measure_model(spec, ["torch"], machine, FAST)
    assert row["status"] == "measured" and row["measured"] is True and row["reason"] == ""
    assert row["model"] == "mobilenet_v3_small" and row["runtime"] == "torch" and row["family"] == spec.family
    assert 0 < row["latency_ms"] < 5000
    assert row["throughput_ips"] > 0
    assert row["memory_mb"] >= spec.num_params * 4 / MIB  # its fp32 weights at least, plus activations
    assert row["size_mb"] == spec.file_size_mb  # torch loads the published file
    assert row["fp32_size_mb"] == spec.file_size_mb
    assert row["accuracy"] == spec.acc1 and row["gflops"] == spec.gflops
    assert row["params_m"] == pytest.approx(spec.num_params / 1e6)
    assert row["machine"] == this_machine(1).key == machine.key
    assert (row["cpu_model"], row["cores"], row["threads"], row["versions"]) == (
        machine.cpu_model,
        machine.cores,
        1,
        machine.versions,
    )
    assert row["measured_at"]


def test_onnx_and_int8_measure_their_own_files(machine):
    spec = get_spec("squeezenet1_1")
    onnx, int8 = measure_model(spec, ["onnx", "int8"], machine, FAST)
    assert (onnx["runtime"], int8["runtime"]) == ("onnx", "int8")
    assert onnx["status"] == int8["status"] == "measured", (onnx["reason"], int8["reason"])
    assert onnx["latency_ms"] > 0 and int8["latency_ms"] > 0
    # the exported fp32 file holds every weight in 4 bytes; int8 in about one
    assert onnx["size_mb"] >= spec.num_params * 4 / MIB
    assert int8["size_mb"] < onnx["size_mb"] / 2
    assert int8["int8_size_mb"] == int8["size_mb"]  # measured, not the one-byte-a-weight estimate
    assert int8["int8_size_mb"] != spec.num_params / MIB
    assert int8["memory_mb"] >= int8["size_mb"] and onnx["memory_mb"] >= onnx["size_mb"]


def test_too_big_for_the_memory_left_is_skipped_without_building(machine, monkeypatch):
    monkeypatch.setenv("ZOOSCOPE_MEMORY_LIMIT_MB", "1")
    built = []
    monkeypatch.setattr(measure, "build_random", lambda spec: built.append(spec) or pytest.fail("built"))
    rows = measure_model(get_spec("vit_b_16"), ["torch", "onnx", "int8"], machine, FAST)
    assert [row["runtime"] for row in rows] == ["torch", "onnx", "int8"]
    for row in rows:
        assert row["status"] == "skipped" and row["measured"] is False
        assert "MB" in row["reason"] and row["reason"].startswith("needs about ")
        assert "latency_ms" not in row  # nothing was timed
        assert row["machine"] == machine.key  # still says where it was tried
    assert built == []


def test_enough_memory_is_not_too_big(monkeypatch):
    monkeypatch.setenv("ZOOSCOPE_MEMORY_LIMIT_MB", str(10**7))
    assert measure.too_big(get_spec("vit_b_16"), ["torch", "int8"]) is None


def test_a_builder_that_raises_fails_every_row_with_the_reason(machine, monkeypatch):
    def broken(spec):
        raise RuntimeError("no kernel for this op here\nand a second line nobody needs")

    monkeypatch.setattr(measure, "build_random", broken)
    rows = measure_model(get_spec("squeezenet1_1"), ["torch", "int8"], machine, FAST)
    assert [row["runtime"] for row in rows] == ["torch", "int8"]
    for row in rows:
        assert row["status"] == "failed" and row["measured"] is False
        assert row["reason"] == "RuntimeError: no kernel for this op here"


# --- the timing loop, on a fake clock -------------------------------------------------------------


class FakeClock:
    """time.perf_counter for core.choose.measure: only a forward moves it, by the next of `durations_ms`."""

    def __init__(self, durations_ms: list[float] | None = None, step_ms: float = 10.0):
        self.now = 100.0
        self.durations = list(durations_ms or [])
        self.step = step_ms
        self.calls = 0

    def perf_counter(self) -> float:
        return self.now

    def forward(self) -> None:
        self.calls += 1
        self.now += (self.durations.pop(0) if self.durations else self.step) / 1000


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(measure, "time", fake)
    return fake


def test_median_honours_runs_and_leaves_out_the_warm_up(clock):
    clock.durations = [500.0, 1.0, 7.0, 3.0, 5.0, 9.0]  # the first is the warm-up
    assert median_forward_ms(clock.forward, runs=5, seconds=60) == pytest.approx(5.0)
    assert clock.calls == 1 + 5


def test_median_stops_at_the_time_budget(clock):
    # 10 ms a forward against 35 ms: three runs (the minimum) leave the clock at 30 ms, a fourth at 40 ms
    assert median_forward_ms(clock.forward, runs=100, seconds=0.035) == pytest.approx(10.0)
    assert clock.calls == 1 + 4


def test_median_never_runs_fewer_than_the_minimum(clock):
    clock.step = 2000.0  # every forward far over the budget
    median_forward_ms(clock.forward, runs=10, seconds=0.5)
    assert clock.calls == 1 + MIN_RUNS
    clock.calls = 0
    median_forward_ms(clock.forward, runs=10, seconds=0.0, minimum=1)
    assert clock.calls == 1 + 1


def test_median_with_a_real_clock_stops_early_for_a_slow_forward():
    import time

    calls = []
    median = median_forward_ms(lambda: (calls.append(1), time.sleep(0.02)), runs=1000, seconds=0.1)
    assert MIN_RUNS + 1 <= len(calls) < 20
    assert median >= 20.0


# --- the machine key ------------------------------------------------------------------------------


def test_machine_key_is_stable_and_names_every_field():
    one = Machine(cpu_model="Some CPU @ 2.0GHz", cores=2, threads=1, versions="python 3.12.3, torch 2.5.1")
    assert one.key == Machine("Some CPU @ 2.0GHz", 2, 1, "python 3.12.3, torch 2.5.1").key
    assert len(one.key) == 16 and int(one.key, 16) >= 0
    others = [
        Machine("Some CPU @ 2.0GHz", 2, 2, one.versions),
        Machine("Some CPU @ 2.0GHz", 2, 1, "python 3.12.3, torch 2.6.0"),
        Machine("Some CPU @ 2.0GHz", 4, 1, one.versions),
        Machine("Other CPU", 2, 1, one.versions),
    ]
    assert len({one.key, *(other.key for other in others)}) == 1 + len(others)
    assert one.columns()["machine"] == one.key and one.columns()["threads"] == 1


def test_this_machine_uses_the_threads_asked_for():
    assert this_machine(3).threads == 3
    assert this_machine(3).key == this_machine(3).key != this_machine(4).key
    assert "torch " in this_machine(1).versions and "onnxruntime " in this_machine(1).versions
