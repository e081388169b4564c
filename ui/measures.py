"""How the pages word what was measured, so that two numbers side by side never look like one.

Two latencies appear in the app and differ by design: the model alone (one forward, batch 1, the
tensor already made: what Compare's table and the int8 check time), and a photo's share of its batch
with preprocessing and top-k (what Classify's cards time; decoding the file is not counted). Each
label says which it is, and the int8 verdict says why it is or is not recommended.
"""

from __future__ import annotations

from core.engines.handle import ModelHandle
from core.runtime import INT8_AGREEMENT_GOAL

MODEL_ALONE = "model alone: one forward at batch 1, preprocessing excluded; median of several runs after a warm-up"
WITH_PREPROCESSING = "with preprocessing: resize, crop and normalise, forward and top-k, per photo; decoding excluded"


def per_photo_latency(latency_ms: float, batch_size: int, device: str) -> str:
    """A Classify card's latency: its share of a batch, with preprocessing, on `device`."""
    batch = "alone (batch 1)" if batch_size == 1 else f"its share of a batch of {batch_size}"
    return f"{latency_ms:.1f} ms per photo with preprocessing, on {device}: {batch}; decoding excluded"


def int8_verdict_line(model: ModelHandle) -> tuple[bool, str]:
    """(recommended, one sentence) for an int8 variant: the headline names the reason, faster or more faithful."""
    recommended, reason = model.int8_verdict()
    faster = model.report["int8_ms"] < model.report["fp32_ms"]
    return recommended, f"{verdict_headline(faster, (model.agreement or 0.0) >= INT8_AGREEMENT_GOAL)}: {reason}"


def verdict_headline(faster: bool, faithful: bool) -> str:
    """The int8 verdict in words that name its reason: speed, faithfulness to fp32's answers, or both."""
    if faster and faithful:
        return "Recommended, faster and as faithful as asked"
    if faster:
        return "Faster, but not recommended as its answers differ from fp32's too often"
    if faithful:
        return "Faithful, but not recommended as it is not faster here"
    return "Not recommended, neither faster nor faithful enough"
