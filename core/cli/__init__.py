"""The command line, `python -m core COMMAND ...`: one module per group of commands, over the same
functions as the app. Each module's `register(commands)` adds its subcommands, each with a `run`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from core.cli import batch, catalogue, choose, classify, features, finetune, shrink, transfer
from core.errors import ZooScopeError
from core.runtime import parse_runtime

COMMAND_GROUPS = (catalogue, classify, finetune, features, transfer, batch, choose, shrink)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="ZooScope from the command line.")
    commands = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command. Its errors are one line on stderr and exit status 2; argparse's own usage
    errors exit with 2 too."""
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        if getattr(args, "runtime", None) is not None:
            try:
                args.runtime = parse_runtime(args.runtime)
            except ValueError as error:
                raise ZooScopeError(str(error)) from None
        return run(args)
    except ZooScopeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
