"""core.features.feature_files: embeddings to Parquet and CSV, in input order with their errors, and back."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.classify.predict import Failure
from core.errors import ZooScopeError
from core.features.analysis import Embeddings
from core.features.feature_files import read_parquet, to_csv, to_parquet


@pytest.fixture
def embeddings() -> Embeddings:
    return Embeddings(
        model="efficientnet_lite0",
        files=["a.jpg", "cat/b.png", "c.png"],
        labels=[None, "cat", None],
        vectors=np.array([[0.5, 1.0, 0.0], [0.25, 0.0, 3.0], [1.0, 1.0, 1.0]], np.float32),
        failures=[Failure("broken.jpg", "The image data is truncated or corrupt.")],
        positions=[0, 1, 3],
        failure_positions=[2],
        failure_labels=["cat"],
        runtime="onnx",
    )


def test_parquet_has_the_issue_columns_in_input_order(embeddings):
    table = pq.read_table(io.BytesIO(to_parquet(embeddings)))
    assert table.column_names == ["file", "label", "embedding", "error"]
    assert table.schema.field("embedding").type == pa.list_(pa.float32())
    column = {name: table.column(name).to_pylist() for name in table.column_names}
    assert column["file"] == ["a.jpg", "cat/b.png", "broken.jpg", "c.png"]
    assert column["label"] == [None, "cat", "cat", None]
    assert column["embedding"][1] == [0.25, 0.0, 3.0] and column["embedding"][2] is None
    assert column["error"] == [None, None, "The image data is truncated or corrupt.", None]


def test_parquet_reads_back_with_its_model(embeddings):
    back = read_parquet(to_parquet(embeddings))
    assert (back.model, back.runtime, back.dimensions) == ("efficientnet_lite0", "onnx", 3)
    assert back.files == embeddings.files and back.labels == embeddings.labels
    np.testing.assert_array_equal(back.vectors, embeddings.vectors)
    assert back.failures == embeddings.failures and back.failure_positions == [2] and back.failure_labels == ["cat"]


def test_a_parquet_file_from_elsewhere_reads_without_a_model(tmp_path):
    path = tmp_path / "theirs.parquet"
    pd.DataFrame({"file": ["x.jpg", "y.jpg"], "embedding": [[1.0, 0.0], [0.0, 1.0]]}).to_parquet(path)
    back = read_parquet(path)
    assert back.model == "" and back.files == ["x.jpg", "y.jpg"] and back.labels == [None, None]


def test_files_that_are_not_embeddings_are_refused(tmp_path):
    with pytest.raises(ZooScopeError, match="not a Parquet file of embeddings"):
        read_parquet(b"file,embedding\n")
    with pytest.raises(ZooScopeError, match="does not exist"):
        read_parquet(tmp_path / "missing.parquet")
    path = tmp_path / "table.parquet"
    pd.DataFrame({"name": ["x"]}).to_parquet(path)
    with pytest.raises(ZooScopeError, match="no 'file' or 'embedding' column"):
        read_parquet(path)
    pd.DataFrame({"file": ["x", "y"], "embedding": [[1.0], [1.0, 2.0]]}).to_parquet(path)
    with pytest.raises(ZooScopeError, match="different lengths"):
        read_parquet(path)


def test_csv_has_one_column_per_number(embeddings):
    frame = pd.read_csv(io.BytesIO(to_csv(embeddings)))
    assert frame.columns.tolist() == ["file", "label", "error", "e0", "e1", "e2"]
    assert frame["file"].tolist() == ["a.jpg", "cat/b.png", "broken.jpg", "c.png"]
    assert frame.loc[1, ["e0", "e1", "e2"]].tolist() == [0.25, 0.0, 3.0]
    assert frame.loc[2, ["e0", "e1", "e2"]].isna().all() and frame.loc[2, "error"].startswith("The image data")
