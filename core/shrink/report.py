"""A shrink's result as a table (the page's and the command line's) and as JSON (the command line's).

The JSON keeps the issue's shape: `{"source", "fidelity_kind", "variants": [{"variant", "params",
"gflops", "size_mb", "latency_ms", "fidelity", "files": {format: path}, "verified": {format:
agreement}}]}`, the unchanged model first; a few more keys say what the table shows beside them.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from core.shrink.run import ShrinkResult
from core.shrink.ship import Verified
from core.shrink.variants import Variant

# Shipped files and their verification, per variant name: {variant: {format: Verified}}.
Shipped = Mapping[str, Mapping[str, Verified]]


def table(result: ShrinkResult) -> pd.DataFrame:
    """One row per variant, with each cost also as a ratio of the unchanged model's."""
    base = result.variants[0]
    rows = [
        {
            "variant": variant.name,
            "params (M)": variant.params / 1e6,
            "GFLOPS": variant.gflops,
            "size (MB)": variant.size_mb,
            "zipped (MB)": variant.compressed_mb,
            "latency 1 thread (ms)": variant.latency_one_thread_ms,
            "latency all threads (ms)": variant.latency_ms,
            "× latency": variant.latency_ms / base.latency_ms,
            "× params": variant.params / base.params,
            result.fidelity_kind: variant.fidelity,
            "Δ " + result.fidelity_kind: variant.fidelity - base.fidelity,
        }
        for variant in result.variants
    ]
    return pd.DataFrame(rows)


def _variant_json(variant: Variant, shipped: Mapping[str, Verified]) -> dict:
    return {
        "variant": variant.name,
        "params": variant.params,
        "gflops": round(variant.gflops, 4),
        "size_mb": round(variant.size_mb, 3),
        "compressed_mb": round(variant.compressed_mb, 3),
        "latency_ms": round(variant.latency_ms, 3),
        "latency_ms_one_thread": round(variant.latency_one_thread_ms, 3),
        "fidelity": round(variant.fidelity, 4),
        "notes": list(variant.notes),
        "files": {fmt: str(verified.path) for fmt, verified in shipped.items()},
        "verified": {fmt: round(verified.agreement, 4) for fmt, verified in shipped.items()},
    }


def as_json(result: ShrinkResult, shipped: Shipped | None = None) -> dict:
    shipped = shipped or {}
    return {
        "source": result.source,
        "fidelity_kind": result.fidelity_kind,
        "images": result.images,
        "variants": [_variant_json(variant, shipped.get(variant.name, {})) for variant in result.variants],
        "refused": list(result.refused),
    }
