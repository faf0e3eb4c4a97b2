"""Console output shared by the subcommands: one Rich console, one way to fail."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def print_error(message: str, label: str = "error") -> None:
    """Print one sentence to stderr, literally and on one line.

    Literally: a path or value holding ``[...]`` is not Rich markup. On one line whatever the
    terminal width, so scripts and logs can match it.
    """
    err_console.print(f"[bold red]{label}:[/] {escape(message)}", soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one plain sentence to stderr and exit non-zero."""
    print_error(message)
    raise typer.Exit(code)
