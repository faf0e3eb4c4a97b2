"""A statement file in, the payloads of its signed events out (all or nothing)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from statements.camt053 import parse_camt053
from statements.entries import Entry, entry_payload
from statements.errors import StatementError
from statements.mt940_file import parse_mt940

MAX_FILE_BYTES = 64 * 1024 * 1024


class StatementFormat(StrEnum):
    mt940 = "mt940"
    camt053 = "camt053"


PARSERS: dict[StatementFormat, Callable[[bytes], list[Entry]]] = {
    StatementFormat.mt940: parse_mt940,
    StatementFormat.camt053: parse_camt053,
}


def read_statement(kind: StatementFormat, path: Path) -> list[Entry]:
    """Parse the whole file before anything is sent; raises ``StatementError``."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise StatementError(f"{path} is larger than {MAX_FILE_BYTES // 2**20} MiB")
        data = path.read_bytes()
    except OSError as exc:
        raise StatementError(f"cannot read {path}: {exc.strerror}") from None
    return PARSERS[kind](data)


def statement_payloads(
    kind: StatementFormat, path: Path, now: datetime | None = None
) -> list[dict[str, Any]]:
    """The ``bank-statement`` transaction payloads of every entry, checked against the schema."""
    from schemas.catalog import TRANSACTION_V1, validation_errors

    entries = read_statement(kind, path)
    payloads = [entry_payload(e, now) for e in entries]
    for entry, payload in zip(entries, payloads, strict=True):
        problems = validation_errors(TRANSACTION_V1, payload)
        if problems:
            raise StatementError(f"the entry does not fit {TRANSACTION_V1} ({', '.join(problems)})",
                                 entry.line or None)
    return payloads
