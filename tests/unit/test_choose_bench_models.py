"""Many models measured in a row and resumed from the cache, the table's file formats, and the shortlist
that measures until the recommendation is measured: measuring is faked (nothing built or timed)."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pandas as pd
import pytest

from core.choose import bench_models as bench
from core.choose.bench_models import bench_models, cheapest_first, read_cache
from core.choose.frontier import Budget, recommend
from core.choose.machine import Machine
from core.choose.measure import base_row
from core.choose.shortlist import SEED, settle
from core.choose.table import BadTable, conform, read_table, write_table
from core.models.catalog import ModelSpec, get_spec

MACHINE = Machine(cpu_model="Test CPU", cores=2, threads=1, versions="python 3.12.3, torch 0.0")
NAMES = ["mobilenet_v3_small", "squeezenet1_1", "resnet18"]


def fake_row(spec: ModelSpec, runtime: str, machine: Machine, status: str = "measured") -> dict:
    """A row as measure_model returns it, with latency = 10 ms a GFLOP."""
    row = base_row(spec, runtime, machine)
    if status != "measured":
        return row | {"status": status, "reason": f"{status} on purpose", "measured": False}
    return row | {
        "status": "measured",
        "reason": "",
        "measured": True,
        "latency_ms": spec.gflops * 10,
        "throughput_ips": 100 / max(spec.gflops, 0.01),
        "size_mb": spec.file_size_mb,
        "memory_mb": spec.file_size_mb + 10,
    }


class FakeMeasure:
    """Stands in for measure_model: records each call; `statuses` gives a model another status."""

    def __init__(self, statuses: dict[str, str] | None = None, sleep_s: float = 0.0):
        self.calls: list[tuple[str, tuple[str, ...], str]] = []
        self.statuses = statuses or {}
        self.sleep_s = sleep_s

    def __call__(self, spec, runtimes, machine, settings=None) -> list[dict]:
        self.calls.append((spec.name, tuple(runtimes), machine.key))
        time.sleep(self.sleep_s)
        return [fake_row(spec, runtime, machine, self.statuses.get(spec.name, "measured")) for runtime in runtimes]

    def models(self) -> list[str]:
        return [name for name, _, _ in self.calls]


@pytest.fixture
def fake(monkeypatch) -> FakeMeasure:
    measure = FakeMeasure()
    monkeypatch.setattr(bench, "measure_model", measure)
    return measure


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "choose" / "measurements.parquet"


# --- bench_models ---------------------------------------------------------------------------------


def test_a_second_run_on_the_same_machine_measures_nothing(fake, cache):
    first = bench_models(NAMES, ["torch"], MACHINE, cache=cache)
    assert first.measured_now == NAMES and first.from_cache == [] and first.not_reached == []
    assert fake.models() == NAMES
    assert sorted(first.table["model"]) == sorted(NAMES)
    assert first.table["status"].eq("measured").all() and first.table["machine"].eq(MACHINE.key).all()
    assert cache.exists()

    second = bench_models(NAMES, ["torch"], MACHINE, cache=cache)
    assert second.measured_now == [] and second.from_cache == NAMES
    assert len(fake.calls) == len(NAMES)  # nothing measured again
    pd.testing.assert_frame_equal(
        second.table.sort_values("model").reset_index(drop=True),
        first.table.sort_values("model").reset_index(drop=True),
    )


def test_another_thread_count_is_another_machine(fake, cache):
    bench_models(NAMES, ["torch"], MACHINE, cache=cache)
    two_threads = Machine(MACHINE.cpu_model, MACHINE.cores, 2, MACHINE.versions)
    run = bench_models(NAMES, ["torch"], two_threads, cache=cache)
    assert run.measured_now == NAMES and run.from_cache == []
    assert [key for _, _, key in fake.calls] == [MACHINE.key] * 3 + [two_threads.key] * 3
    assert run.table["machine"].eq(two_threads.key).all() and len(run.table) == 3
    cached = read_cache(cache)
    assert len(cached) == 6  # both machines' rows are kept
    assert bench_models(NAMES, ["torch"], MACHINE, cache=cache).measured_now == []


def test_only_the_runtimes_missing_are_measured(fake, cache):
    bench_models(NAMES[:1], ["torch"], MACHINE, cache=cache)
    run = bench_models(NAMES[:1], ["torch", "int8"], MACHINE, cache=cache)
    assert fake.calls[-1] == (NAMES[0], ("int8",), MACHINE.key)
    assert sorted(run.table["runtime"]) == ["int8", "torch"]


def test_skipped_rows_are_tried_again_failed_ones_are_not(fake, cache):
    fake.statuses = {"mobilenet_v3_small": "skipped", "squeezenet1_1": "failed"}
    first = bench_models(NAMES, ["torch"], MACHINE, cache=cache)
    assert dict(zip(first.table["model"], first.table["status"], strict=True)) == {
        "mobilenet_v3_small": "skipped",
        "squeezenet1_1": "failed",
        "resnet18": "measured",
    }
    fake.statuses = {}  # memory freed since: the skipped one fits now
    second = bench_models(NAMES, ["torch"], MACHINE, cache=cache)
    assert second.measured_now == ["mobilenet_v3_small"]
    assert second.from_cache == ["squeezenet1_1", "resnet18"]
    statuses = dict(zip(second.table["model"], second.table["status"], strict=True))
    assert statuses == {"mobilenet_v3_small": "measured", "squeezenet1_1": "failed", "resnet18": "measured"}
    assert len(read_cache(cache)) == 3  # the skipped row was replaced, not kept beside the new one


def test_should_stop_leaves_the_rest_not_reached(fake, cache):
    run = bench_models(NAMES, ["torch"], MACHINE, cache=cache, should_stop=lambda: len(fake.calls) >= 1)
    assert run.measured_now == NAMES[:1] and run.not_reached == NAMES[1:]
    assert list(run.table["model"]) == NAMES[:1]


def test_the_time_budget_leaves_the_rest_not_reached(monkeypatch, cache):
    slow = FakeMeasure(sleep_s=0.2)
    monkeypatch.setattr(bench, "measure_model", slow)
    seen = []
    run = bench_models(
        NAMES, ["torch"], MACHINE, cache=cache, time_budget_s=0.1, progress=lambda *args: seen.append(args)
    )
    assert run.measured_now == NAMES[:1] and run.not_reached == NAMES[1:]
    assert slow.models() == NAMES[:1]
    assert seen[0][:2] == (0, 3) and "mobilenet_v3_small" in seen[0][2]
    assert seen[-1] == (3, 3, "measured")
    # the next run resumes where this one stopped
    monkeypatch.setattr(bench, "measure_model", FakeMeasure())
    rest = bench_models(NAMES, ["torch"], MACHINE, cache=cache)
    assert rest.from_cache == NAMES[:1] and rest.measured_now == NAMES[1:]


@pytest.mark.parametrize("junk", [b"\x00\x01junk" * 50, b"PAR1 cut short by a crash"])
def test_a_corrupt_cache_is_rebuilt(fake, cache, junk):
    cache.parent.mkdir(parents=True)
    cache.write_bytes(junk)
    assert read_cache(cache).empty
    run = bench_models(NAMES, ["torch"], MACHINE, cache=cache)
    assert run.measured_now == NAMES and len(run.table) == 3
    assert sorted(read_table(cache)["model"]) == sorted(NAMES)  # a readable cache again


def test_the_cache_lives_under_the_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("ZOOSCOPE_CACHE_DIR", str(tmp_path / "zoo"))
    assert bench.cache_file() == tmp_path / "zoo" / "choose" / "measurements.parquet"


def test_cheapest_first_orders_by_gflops():
    names = ["vit_b_16", "resnet50", "squeezenet1_1", "mobilenet_v3_small", "resnet18"]
    ordered = cheapest_first(names)
    assert ordered == ["mobilenet_v3_small", "squeezenet1_1", "resnet18", "resnet50", "vit_b_16"]
    gflops = [get_spec(name).gflops for name in ordered]
    assert gflops == sorted(gflops)


# --- the table's files ----------------------------------------------------------------------------


def _some_rows() -> pd.DataFrame:
    rows = [fake_row(get_spec(name), "torch", MACHINE) for name in NAMES]
    rows.append(fake_row(get_spec("vit_b_16"), "int8", MACHINE, "skipped"))
    return conform(pd.DataFrame(rows))


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_write_then_read_round_trip(tmp_path, suffix):
    table = _some_rows()
    path = write_table(table, tmp_path / "deeper" / f"table{suffix}")
    assert path.exists() and not path.with_name(path.name + ".partial").exists()
    back = read_table(path)
    if suffix == ".csv":  # a CSV cannot tell an empty reason from a missing one
        back["reason"] = back["reason"].fillna("")
    pd.testing.assert_frame_equal(back, table)
    assert read_table(path.read_bytes()).equals(read_table(path))  # by content, not name
    assert read_table(io.BytesIO(path.read_bytes()))["measured"].tolist() == [True, True, True, False]


def _png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_png(), "photo.png is not a Parquet or CSV table of measurements"),
        (b"", "photo.png is empty."),
        (b"\n", "photo.png is not a Parquet or CSV table of measurements"),
        (b"name,speed\nresnet18,3\n", "photo.png has no column model, runtime, latency_ms, accuracy"),
        (b"model,latency_ms\nresnet18,3\n", "photo.png has no column runtime, accuracy"),
        (b"model,runtime,latency_ms,accuracy\nresnet18,tensorrt,3,69.8\n", "does not know: tensorrt"),
    ],
)
def test_not_a_table_is_a_plain_sentence(data, message):
    with pytest.raises(BadTable) as info:
        read_table(data, name="photo.png")
    text = str(info.value)
    assert message in text
    assert "\n" not in text and "Traceback" not in text


def test_a_missing_file_is_a_bad_table(tmp_path):
    missing = tmp_path / "nowhere.parquet"
    with pytest.raises(BadTable, match="nowhere.parquet"):
        read_table(missing)


def test_a_hand_made_csv_counts_as_measured(tmp_path):
    path = tmp_path / "pi.csv"
    path.write_text("model,runtime,latency_ms,accuracy\nresnet18,torch,120.5,69.758\nresnet50,int8,,80.858\n")
    table = read_table(path)
    assert list(table.columns) == list(conform(table).columns)
    first, second = table.to_dict("records")
    assert first["status"] == "measured" and bool(first["measured"]) and first["latency_ms"] == 120.5
    assert second["status"] == "skipped" and not bool(second["measured"])  # no latency: nothing measured


# --- the shortlist --------------------------------------------------------------------------------


def test_settle_measures_until_the_top_three_are_measured(fake, cache):
    budget = Budget(max_latency_ms=30, runtime="torch")  # 3 GFLOPS at 10 ms a GFLOP
    table = settle(budget, MACHINE, cache=cache)
    seed = set(SEED)
    assert set(fake.models()[: len(SEED)]) == seed  # the seed first, cheapest first
    assert fake.models()[: len(SEED)] == cheapest_first(list(SEED))
    extra = fake.models()[len(SEED) :]
    assert extra and not set(extra) & seed  # then the recommended ones the seed lacked
    picks = recommend(table, budget)
    assert len(picks) == 3
    assert all(pick.row["measured"] is True and pick.row["status"] == "measured" for pick in picks)
    assert all(pick.row["latency_ms"] <= 30 for pick in picks)
    # the rest of the catalogue is predicted, for this machine
    predicted = table[table["status"].eq("predicted")]
    assert not predicted.empty and not predicted["measured"].any()
    assert set(table["runtime"]) == {"torch"}
    # settled: asking again measures nothing
    before = len(fake.calls)
    settle(budget, MACHINE, cache=cache)
    assert len(fake.calls) == before
