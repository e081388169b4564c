"""What every bench script shares: its tables, and a main that never fails the caller."""

from __future__ import annotations

import sys
from collections.abc import Callable


def table(header: list[str], rows: list[list[str]], markdown: bool) -> str:
    """`rows` under `header`, as a markdown table or as aligned plain text."""
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def run_report(main: Callable[[], object], name: str) -> None:
    """Run a bench script's `main` and exit 0 whatever happens: a benchmark is a report, not a test."""
    try:
        main()
    except Exception as error:  # never fail the caller (make bench runs them all)
        print(f"{name} failed: {type(error).__name__}: {error}", file=sys.stderr)
    sys.exit(0)
