"""Errors of statement import: each names the file's line, so an operator can fix it."""

from __future__ import annotations

from config.errors import AttestError


class StatementError(AttestError):
    """A statement file that cannot be imported; nothing of it is sent."""

    def __init__(self, message: str, line: int | None = None) -> None:
        self.line = line
        super().__init__(f"line {line}: {message}" if line else message)
