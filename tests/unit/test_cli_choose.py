"""`python -m core choose` and `bench-models` run in-process: budgets on a table from another device,
errors as one line, and one tiny model really measured into a table."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from core.__main__ import main
from core.choose.machine import Machine, this_machine
from core.choose.measure import base_row
from core.choose.shortlist import SEED
from core.choose.table import conform, read_table, write_table
from core.models.catalog import all_specs, get_spec
from tests.cli import run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DEVICE = Machine(cpu_model="Cortex-A72", cores=4, threads=4, versions="python 3.11.2, torch 2.5.1")
MEASURED = SEED[:12]  # the short list's small and mid-sized models, a dozen families
KEYS = {"model", "runtime", "latency_ms", "size_mb", "memory_mb", "accuracy", "measured", "on_frontier"}


def latency_on_the_device(name: str) -> float:
    return get_spec(name).gflops * 10 + 3


@pytest.fixture
def device_table(tmp_path) -> str:
    """Another device's measurements: the twelve models above in torch, 10 ms a GFLOP plus 3 ms."""
    rows = []
    for name in MEASURED:
        spec = get_spec(name)
        rows.append(
            base_row(spec, "torch", DEVICE)
            | {
                "status": "measured",
                "reason": "",
                "measured": True,
                "latency_ms": latency_on_the_device(name),
                "throughput_ips": 50.0,
                "size_mb": spec.file_size_mb,
                "memory_mb": spec.file_size_mb + 20,
            }
        )
    return str(write_table(conform(pd.DataFrame(rows)), tmp_path / "pi.parquet"))


def test_choose_from_a_device_table_within_every_budget(capsys, device_table):
    code, out, err = run(
        capsys, "choose", "--table", device_table, "--max-latency-ms", "30", "--max-size-mb", "50",
        "--min-accuracy", "70", "--format", "json",
    )  # fmt: skip
    assert code == 0, err
    rows = json.loads(out)
    assert rows and all(set(row) == KEYS for row in rows)
    for row in rows:
        assert row["runtime"] == "torch"  # the only runtime the device measured: no predictions for the others
        assert row["latency_ms"] <= 30 and row["size_mb"] <= 50 and row["accuracy"] >= 70
        assert isinstance(row["measured"], bool) and isinstance(row["on_frontier"], bool)
    accuracies = [row["accuracy"] for row in rows]
    assert accuracies == sorted(accuracies, reverse=True)  # best first

    measured = {row["model"] for row in rows if row["measured"]}
    fits = {
        name
        for name in MEASURED
        if latency_on_the_device(name) <= 30 and get_spec(name).file_size_mb <= 50 and get_spec(name).acc1 >= 70
    }
    assert measured == fits  # every measured model that fits, and only those
    for row in rows:
        if row["measured"]:
            assert row["latency_ms"] == pytest.approx(latency_on_the_device(row["model"]), abs=0.01)
    predicted = {row["model"] for row in rows if not row["measured"]}
    assert predicted and not predicted & set(MEASURED)  # other catalogue models, predicted
    assert predicted <= set(all_specs())
    assert any(row["on_frontier"] for row in rows)


def test_choose_prints_the_budget_and_recommendations_as_text(capsys, device_table):
    code, out, _ = run(capsys, "choose", "--table", device_table, "--max-latency-ms", "30", "--runtime", "torch")
    assert code == 0
    assert out.startswith("At most 30 ms an image, in PyTorch.")
    assert out.count("\n- ") == 3 and "The most accurate model within your budget" in out


def test_nothing_fits_is_an_empty_list_and_a_sentence(capsys, device_table):
    code, out, err = run(capsys, "choose", "--table", device_table, "--max-latency-ms", "0.5", "--format", "json")
    assert code == 0
    assert json.loads(out) == []
    assert err.count("\n") == 1
    assert "fastest model" in err and "against a budget of 0.5 ms" in err


@pytest.mark.parametrize("contents", [b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, b"", b"name,speed\nx,1\n", None])
def test_a_bad_table_is_a_one_line_error(capsys, tmp_path, contents):
    path = tmp_path / "table.parquet"
    if contents is not None:  # None: no file at all
        path.write_bytes(contents)
    code, out, err = run(capsys, "choose", "--table", str(path), "--max-latency-ms", "30", "--format", "json")
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert str(path) in err


# --- bench-models ---------------------------------------------------------------------------------


def test_bench_models_measures_one_tiny_model_then_resumes(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOOSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    out_path = tmp_path / "tables" / "T.parquet"
    code, out, err = run(capsys, "bench-models", "--models", "squeezenet1_1", "--threads", "1", "--out", str(out_path))
    assert code == 0, err
    assert out == ""  # written to the file, not printed
    assert "1 models measured now, 0 from earlier runs" in err and str(out_path) in err
    table = read_table(out_path)
    assert len(table) == 1
    row = table.iloc[0]
    assert (row["model"], row["runtime"], row["status"]) == ("squeezenet1_1", "torch", "measured")
    assert bool(row["measured"]) and row["latency_ms"] > 0 and row["throughput_ips"] > 0
    assert row["machine"] == this_machine(1).key and row["threads"] == 1
    assert (tmp_path / "cache" / "choose" / "measurements.parquet").exists()

    code, out, err = run(capsys, "bench-models", "--models", "squeezenet1_1", "--threads", "1", "--format", "json")
    assert code == 0, err
    assert "0 models measured now, 1 from earlier runs" in err
    (again,) = json.loads(out)
    assert again["model"] == "squeezenet1_1" and again["latency_ms"] == pytest.approx(row["latency_ms"])


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--models", "nosuchmodel", "There is no model called 'nosuchmodel'"),
        ("--runtime", "torch,bogus", "runtimes are a comma-separated list of torch, onnx, int8"),
        ("--threads", "0", "give a whole number of at least 1"),
    ],
)
def test_bench_models_refuses_bad_options(capsys, tmp_path, monkeypatch, option, value, message):
    monkeypatch.setenv("ZOOSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(SystemExit) as info:
        main(["bench-models", option, value, "--out", str(tmp_path / "T.parquet")])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "T.parquet").exists() and not (tmp_path / "cache" / "choose").exists()


def test_choose_refuses_a_limit_of_zero(capsys, device_table):
    with pytest.raises(SystemExit) as info:
        main(["choose", "--table", device_table, "--max-latency-ms", "0"])
    assert info.value.code == 2
    assert "give a number above 0" in capsys.readouterr().err


def test_the_table_of_one_device_is_read_whatever_its_name(capsys, tmp_path, device_table):
    csv = Path(tmp_path / "pi.txt")
    read_table(device_table).to_csv(csv, index=False)
    code, out, _ = run(capsys, "choose", "--table", str(csv), "--max-latency-ms", "30", "--format", "json")
    assert code == 0
    by_name = json.loads(out)
    code, out, _ = run(capsys, "choose", "--table", device_table, "--max-latency-ms", "30", "--format", "json")
    assert by_name == json.loads(out)
