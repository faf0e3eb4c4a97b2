"""The root of every error Attest raises on purpose.

Each package keeps its own error root (``SecurityError``, ``StorageError``, ...) so a caller
can catch one layer's failures; all of them derive from ``AttestError`` so that the CLI
catches the root once and turns any of them into one sentence and a documented exit code,
while an exception that is not an ``AttestError`` is a bug and says so.
"""

from __future__ import annotations


class AttestError(Exception):
    """Base of every error that Attest raises deliberately, with a message meant for people."""
