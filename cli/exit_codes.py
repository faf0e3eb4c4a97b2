"""Operator errors to one sentence and a documented exit code (docs/operations.md)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer

from cli.output import err_console
from operations.errors import ExitCode, OperationsError
from storage.errors import DatabaseUnavailable
from streams.errors import BrokerUnavailable


@contextmanager
def operator_errors() -> Iterator[None]:
    """Turn the errors an operator can fix into one sentence and their exit code."""
    try:
        yield
    except OperationsError as exc:
        _fail(str(exc), exc.exit_code)
    except BrokerUnavailable as exc:
        _fail(str(exc), ExitCode.BROKER_UNREACHABLE)
    except DatabaseUnavailable as exc:
        _fail(f"cannot reach the database ({exc})", ExitCode.DATABASE_UNREACHABLE)


def _fail(message: str, code: ExitCode) -> None:
    err_console.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
    raise typer.Exit(int(code))
