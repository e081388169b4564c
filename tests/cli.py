"""Running `python -m core` in the test's own process, as the command line tests do."""

from __future__ import annotations

from core.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """The exit status, stdout and stderr of `python -m core *argv`."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err
