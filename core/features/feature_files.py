"""Embeddings as files: Parquet (one list column, read back by `similar`) and CSV (one column per number).

Both hold one row per input image, in input order: `file`, `label` (the class folder, when known),
the embedding, and `error` for a file that could not be used (its embedding is empty). The Parquet
file also records which backbone made the embeddings (schema metadata `zooscope`), so a query photo
can be embedded by the same model later. pyarrow is imported where it is used.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from core.classify.predict import Failure
from core.errors import ZooScopeError
from core.features.analysis import Embeddings

COLUMNS = ("file", "label", "embedding", "error")
METADATA_KEY = b"zooscope"
FORMAT_VERSION = 1


_Row = tuple[int, str, str | None, np.ndarray | None, str | None]


def _rows(embeddings: Embeddings) -> list[_Row]:
    """(input position, file, label, vector or None, error or None), in input order."""
    rows: list[_Row] = [
        (position, file, label, vector, None)
        for position, file, label, vector in zip(
            embeddings.positions, embeddings.files, embeddings.labels, embeddings.vectors, strict=True
        )
    ]
    labels = embeddings.failure_labels or [None] * len(embeddings.failures)
    rows += [
        (position, failure.file, label, None, failure.error)
        for position, failure, label in zip(embeddings.failure_positions, embeddings.failures, labels, strict=True)
    ]
    return sorted(rows, key=lambda row: row[0])


def to_parquet(embeddings: Embeddings) -> bytes:
    """The embeddings as Parquet bytes: columns file, label, embedding (list of float32), error."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _rows(embeddings)
    table = pa.table(
        {
            "file": pa.array([row[1] for row in rows], pa.string()),
            "label": pa.array([row[2] for row in rows], pa.string()),
            "embedding": pa.array(
                [None if row[3] is None else row[3].astype(np.float32) for row in rows], pa.list_(pa.float32())
            ),
            "error": pa.array([row[4] for row in rows], pa.string()),
        }
    )
    about = {
        "format": FORMAT_VERSION,
        "model": embeddings.model,
        "runtime": embeddings.runtime,
        "dimensions": embeddings.dimensions,
    }
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), METADATA_KEY: json.dumps(about)})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def to_csv(embeddings: Embeddings) -> bytes:
    """The embeddings as CSV: file, label, error, then e0 ... e{D-1} (one column per number)."""
    rows = _rows(embeddings)
    dimensions = embeddings.dimensions
    numbers = np.full((len(rows), dimensions), np.nan, dtype=np.float32)
    for line, row in enumerate(rows):
        if row[3] is not None:
            numbers[line] = row[3]
    frame = pd.DataFrame({"file": [r[1] for r in rows], "label": [r[2] for r in rows], "error": [r[4] for r in rows]})
    values = pd.DataFrame(numbers, columns=[f"e{i}" for i in range(dimensions)])
    return pd.concat([frame, values], axis=1).to_csv(index=False, float_format="%.7g").encode()


def read_parquet(source: str | Path | bytes) -> Embeddings:
    """Embeddings written by `to_parquet` (or any Parquet file with `file` and `embedding` columns;
    its model is then unknown: ""). ZooScopeError when it cannot be read or has no embeddings."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    shown = "The file" if isinstance(source, bytes) else str(source)
    try:
        table = pq.read_table(io.BytesIO(source) if isinstance(source, bytes) else source)
    except FileNotFoundError:
        raise ZooScopeError(f"{shown} does not exist.") from None
    except (OSError, pa.ArrowException) as error:
        raise ZooScopeError(f"{shown} is not a Parquet file of embeddings ({error}).") from None
    missing = [name for name in ("file", "embedding") if name not in table.column_names]
    if missing:
        columns = " or ".join(repr(name) for name in missing)
        raise ZooScopeError(f"{shown} has no {columns} column: it was not written by embed.")
    about = json.loads((table.schema.metadata or {}).get(METADATA_KEY, b"{}"))
    files = table.column("file").to_pylist()
    vectors = table.column("embedding").to_pylist()
    labels = table.column("label").to_pylist() if "label" in table.column_names else [None] * len(files)
    errors = table.column("error").to_pylist() if "error" in table.column_names else [None] * len(files)
    usable = [i for i, (vector, error) in enumerate(zip(vectors, errors, strict=True)) if vector and not error]
    if len({len(vectors[i]) for i in usable}) > 1:
        raise ZooScopeError(f"{shown} holds embeddings of different lengths; it mixes models.")
    dimensions = len(vectors[usable[0]]) if usable else int(about.get("dimensions", 0))
    kept = set(usable)
    failed = [i for i in range(len(files)) if i not in kept]
    return Embeddings(
        model=str(about.get("model", "")),
        files=[str(files[i]) for i in usable],
        labels=[labels[i] for i in usable],
        vectors=np.asarray([vectors[i] for i in usable], np.float32).reshape(len(usable), dimensions),
        failures=[Failure(str(files[i]), errors[i] or "No embedding.") for i in failed],
        positions=usable,
        failure_positions=failed,
        failure_labels=[labels[i] for i in failed],
        runtime=str(about.get("runtime", "")),
    )
