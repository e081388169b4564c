"""The work of one batch, the same for both engines: (file, bytes, error) rows in, one row per file out.

`BatchWorker` is what Ray Data's actor pool runs (a callable class: the model loads once per actor,
in its constructor) and what the local engine runs in its loop. It loads the model through
core.engines.choice (the runtime core.runtime chooses: ONNX Runtime on the CPU where verified), then
classifies with core.classify.predict.classify_files, as `python -m core classify` does, or embeds with
core.features.embedding.embed_encoded, as core.features.analysis does: decoding (core.images), preprocessing
(core.preprocessing) and the forward are theirs. No second copy of the ML code.

Output columns:
- classify: `file`, `top1`, `probability` (of top1), `top_k` (a list of {label, probability}, best
  first), `error`;
- embed: `file`, `embedding` (a list of float32), `error`.

A file that could not be read (`error` already set on its input row) or decoded keeps its row, with
the error and nulls; nothing is dropped and nothing raises for one bad file.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from core.classify.predict import DEFAULT_BATCH_SIZE, DEFAULT_TOP_K, Classification, Failure, classify_files
from core.engines.choice import load_handle
from core.features.embedding import Embedded, embed_encoded, embedder_for
from core.models.keys import ModelKey
from core.runtime import pick_device

if TYPE_CHECKING:
    import pyarrow as pa

Kind = Literal["classify", "embed"]
KINDS: tuple[Kind, ...] = ("classify", "embed")
METADATA_KEY = b"zooscope"  # Parquet key-value metadata: the job that wrote the rows (for --resume)

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchJob:
    """What a batch run computes; small and picklable, so Ray sends it to every actor."""

    kind: Kind
    model: str
    runtime: str | None = None  # auto, torch, onnx or int8; None: ZOOSCOPE_RUNTIME, else auto
    top_k: int = DEFAULT_TOP_K
    batch_size: int = DEFAULT_BATCH_SIZE  # files per batch, and so images per forward pass

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {self.batch_size}")

    def describe(self) -> dict:
        """What a resumed run must agree with: kind, model, and for classify the top-k."""
        keep = ("kind", "model", "top_k") if self.kind == "classify" else ("kind", "model")
        return {key: value for key, value in asdict(self).items() if key in keep}

    def schema(self) -> pa.Schema:
        import pyarrow as pa

        if self.kind == "classify":
            prediction = pa.struct([("label", pa.string()), ("probability", pa.float64())])
            fields = [("top1", pa.string()), ("probability", pa.float64()), ("top_k", pa.list_(prediction))]
        else:
            fields = [("embedding", pa.list_(pa.float32()))]
        metadata = {METADATA_KEY: json.dumps(self.describe()).encode()}
        return pa.schema([("file", pa.string()), *fields, ("error", pa.string())], metadata=metadata)


# --- the worker -----------------------------------------------------------------------------------


class BatchWorker:
    """Loads `job.model` once, then turns input batches (core.batch.sources.input_schema) into output
    rows (`job.schema()`), one per input row, in the same order."""

    def __init__(self, job: BatchJob):
        self.job = job
        self.model = load_handle(ModelKey(job.model), pick_device(), runtime_choice=job.runtime)
        self.embedder = embedder_for(self.model.torch, runtime=self.model.runtime) if job.kind == "embed" else None
        self.schema = job.schema()

    @property
    def runtime(self) -> str:
        """What runs the forward: torch, onnx or int8 (an embedding's own ONNX export may fall back to torch)."""
        return self.embedder.runtime if self.embedder else self.model.runtime

    def __call__(self, batch: pa.Table) -> pa.Table:
        import pyarrow as pa

        names = batch.column("file").to_pylist()
        read_errors = batch.column("error").to_pylist()
        readable = [
            (name, data)
            for name, data, error in zip(names, batch.column("bytes").to_pylist(), read_errors, strict=True)
            if error is None
        ]
        computed = iter(self._results(readable))
        rows = [self._row(name, error) if error is not None else self._row(name, next(computed))
                for name, error in zip(names, read_errors, strict=True)]  # fmt: skip
        return pa.Table.from_pylist(rows, schema=self.schema)

    def _results(self, files: list[tuple[str, bytes]]) -> list:
        """One result per file; a batch that fails as a whole (not for a decoding error, which is a
        row already) is done again file by file, so only the file that fails loses its answer."""
        try:
            return self._compute(files)
        except Exception as error:  # noqa: BLE001 - one strange file must not cost the others their rows
            if len(files) > 1:
                return [result for file in files for result in self._results([file])]
            _log.warning("%s failed", files[0][0], exc_info=True)
            return [Failure(file=files[0][0], error=f"The model could not process this file ({error!r}).")]

    def _compute(self, files: list[tuple[str, bytes]]) -> list:
        if not files:
            return []
        if self.embedder is not None:
            results = embed_encoded(self.embedder, [data for _, data in files])
            return [
                result.vector if isinstance(result, Embedded) else Failure(file=name, error=str(result))
                for (name, _), result in zip(files, results, strict=True)
            ]
        return classify_files(self.model, files, k=self.job.top_k, batch_size=self.job.batch_size)

    @staticmethod
    def _row(name: str, result: Classification | np.ndarray | Failure | str) -> dict:
        """The output row of one file (a column the row leaves out is null)."""
        if isinstance(result, str):  # it could not be read
            return {"file": name, "error": result}
        if isinstance(result, Failure):
            return {"file": name, "error": result.error}
        if isinstance(result, Classification):
            return {
                "file": name,
                "top1": result.top1.label,
                "probability": result.top1.probability,
                "top_k": [{"label": p.label, "probability": p.probability} for p in result.predictions],
            }
        return {"file": name, "embedding": result}
