"""How sure an answer looks: the one floor below which a top-1 is drawn as weak, and its styling.

A softmax always names a class; at 5.6% it is a guess among a thousand, and it must not be drawn like
a 95% answer. Every page styles a top-1 through here, so the floor is defined and shown in one place.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

WEAK_BELOW = 0.20  # a top-1 probability under this is drawn muted, with a "weak" badge
WEAK_LABEL = f"weak: below {WEAK_BELOW:.0%}"
WEAK_HELP = (
    f"A top-1 below {WEAK_BELOW:.0%} is a weak answer: the model spreads its probability over many "
    "classes, so its first choice is little better than its next few. Such answers are greyed."
)
MUTED = "color: #8a8f98"  # table text of a weak row


def is_weak(probability: float | None) -> bool:
    return probability is not None and probability < WEAK_BELOW


def answer_markdown(markdown: str, probability: float) -> str:
    """`markdown` (an answer line) greyed, with a "weak: below 20%" badge, when `probability` is weak."""
    if not is_weak(probability):
        return markdown
    return f":gray[{markdown}] :gray-badge[{WEAK_LABEL}]"


def weak_rows(frame: pd.DataFrame, column: str) -> Any:
    """`frame` as a Styler whose rows with a weak `column` (a 0..1 top-1) have muted text."""

    def style(row: pd.Series) -> list[str]:
        return [MUTED if is_weak(row[column]) else ""] * len(row)

    return frame.style.apply(style, axis=1)
