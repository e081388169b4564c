"""`python -m core COMMAND ...`: the command line (core.cli)."""

import sys

from core.cli import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
