"""The measurements table: one row per (model, runtime), the same schema on every machine.

A table measured on another device (a Raspberry Pi, a laptop, a cloud VM) is read with `read_table`
and chosen from like this machine's: its own rows say where they were measured.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import IO

import pandas as pd

from core.errors import ZooScopeError

RUNTIMES = ("torch", "onnx", "int8")

# Column -> pandas dtype. `latency_ms` is measured where `measured` is true, predicted otherwise.
COLUMNS: dict[str, str] = {
    "model": "string",
    "family": "string",
    "runtime": "string",  # torch (eager), onnx (ONNX Runtime fp32), int8 (ONNX Runtime static int8)
    "status": "string",  # measured, skipped (too big for the memory left), failed (the reason says why)
    "reason": "string",
    "measured": "bool",  # false: latency_ms is the latency model's prediction
    "latency_ms": "float64",  # median at batch 1
    "throughput_ips": "float64",  # images per second at batch 8
    "memory_mb": "float64",  # what the model adds to the process: weights and a forward's peak
    "size_mb": "float64",  # the file this runtime loads
    "fp32_size_mb": "float64",
    "int8_size_mb": "float64",
    "params_m": "float64",
    "gflops": "float64",
    "accuracy": "float64",  # published ImageNet-1K top-1, percent
    "input_size": "int64",
    "threads": "int64",
    "cpu_model": "string",
    "cores": "int64",
    "machine": "string",  # a key: CPU, cores, threads and library versions (core.choose.machine)
    "versions": "string",
    "measured_at": "string",  # ISO date and time, UTC
}
REQUIRED = ("model", "runtime", "latency_ms", "accuracy")


class BadTable(ZooScopeError):
    """A file that is not a measurements table (wrong format, or columns missing)."""


def empty_table() -> pd.DataFrame:
    return conform(pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in COLUMNS.items()}))


def conform(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with every column of the schema, in order, each of its dtype (missing ones empty)."""
    out = pd.DataFrame(index=frame.index)
    for name, dtype in COLUMNS.items():
        column = frame[name] if name in frame else pd.Series(pd.NA, index=frame.index)
        if dtype == "bool":
            out[name] = column.fillna(False).astype(bool)
        elif dtype == "int64":
            out[name] = pd.to_numeric(column, errors="coerce").fillna(0).astype("int64")
        elif dtype == "float64":
            out[name] = pd.to_numeric(column, errors="coerce").astype("float64")
        else:
            out[name] = column.astype("string")
    return out.reset_index(drop=True)


def read_table(source: str | Path | IO[bytes] | bytes, name: str = "") -> pd.DataFrame:
    """A table from Parquet or CSV (by content, not name), conformed to the schema.

    Raises BadTable with a plain sentence for anything else: a picture, an empty file, a CSV without
    the required columns.
    """
    label = name or (str(source) if isinstance(source, (str, Path)) else "the file")
    try:
        data = (
            Path(source).read_bytes()
            if isinstance(source, (str, Path))
            else (source if isinstance(source, bytes) else source.read())
        )
    except OSError as error:  # missing, a folder, unreadable: a sentence, not a traceback
        raise BadTable(f"Could not read {label}: {error.strerror or error}.") from None
    if not data:
        raise BadTable(f"{label} is empty.")
    try:
        if data[:4] == b"PAR1":
            frame = pd.read_parquet(io.BytesIO(data))
        else:
            frame = pd.read_csv(io.BytesIO(data))
    except Exception as error:  # pyarrow and the CSV parser raise many kinds for a file that is neither
        raise BadTable(f"{label} is not a Parquet or CSV table of measurements ({type(error).__name__}).") from None
    missing = [column for column in REQUIRED if column not in frame.columns]
    if missing:
        raise BadTable(
            f"{label} has no column {', '.join(missing)}: "
            "make a table with `python -m core bench-models --out TABLE.parquet`."
        )
    given = set(frame.columns)
    frame = conform(frame)
    unknown = sorted(set(frame["runtime"].dropna()) - set(RUNTIMES))
    if unknown:
        raise BadTable(f"{label} has runtimes ZooScope does not know: {', '.join(unknown)}.")
    if "status" not in given:  # a hand-made table: every row with a latency counts as measured
        frame["status"] = frame["latency_ms"].notna().map({True: "measured", False: "skipped"}).astype("string")
    if "measured" not in given:
        frame["measured"] = frame["status"].eq("measured").fillna(False).astype(bool)
    return frame


def write_table(frame: pd.DataFrame, path: Path) -> Path:
    """Parquet (or CSV where the name ends in .csv); the folder is made, the file replaced whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".partial")
    table = conform(frame)
    if path.suffix.lower() == ".csv":
        table.to_csv(staging, index=False)
    else:
        table.to_parquet(staging, index=False)
    staging.replace(path)
    return path


def measured_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows with a real measurement (neither skipped, failed nor predicted)."""
    return frame[frame["measured"] & frame["status"].eq("measured") & frame["latency_ms"].notna()]
