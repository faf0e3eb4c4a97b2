"""Operator errors to one sentence and a documented exit code (docs/operations.md).

Every error Attest raises on purpose derives from ``config.errors.AttestError``, so the CLI
catches that root once: ``attest_errors`` around a command's one call into the layer below,
``main()`` around the whole app. Only ``replay``, ``dlq`` and ``status`` distinguish an
unreachable broker or database by exit code (``operator_errors``); everything else is
``error: <message>`` and exit 1, or an ``OperationsError``'s own code.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

from cli.output import fail
from config.errors import AttestError
from operations.errors import ExitCode, OperationsError
from storage.errors import DatabaseUnavailable
from streams.errors import BrokerUnavailable


def exit_code_of(exc: AttestError) -> ExitCode:
    """The documented code of an error: an ``OperationsError`` carries its own, the rest 1."""
    return exc.exit_code if isinstance(exc, OperationsError) else ExitCode.ERROR


@contextmanager
def attest_errors() -> Iterator[None]:
    """Any ``AttestError``: one sentence on stderr and its exit code (1 unless it names one)."""
    try:
        yield
    except AttestError as exc:
        _fail(str(exc), exit_code_of(exc))


@contextmanager
def operator_errors() -> Iterator[None]:
    """Turn the errors an operator can fix into one sentence and their exit code.

    Outages first (their codes are documented for ``replay``, ``dlq`` and ``status``), then
    the root: any other ``AttestError`` is one sentence too.
    """
    try:
        yield
    except BrokerUnavailable as exc:
        _fail(str(exc), ExitCode.BROKER_UNREACHABLE)
    except DatabaseUnavailable as exc:
        _fail(f"cannot reach the database ({exc})", ExitCode.DATABASE_UNREACHABLE)
    except AttestError as exc:
        _fail(str(exc), exit_code_of(exc))


def _fail(message: str, code: ExitCode) -> NoReturn:
    fail(message, int(code))
