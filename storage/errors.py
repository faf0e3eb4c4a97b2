"""Storage errors: an outage (retry and hold the stream) versus anything else."""

from __future__ import annotations

from config.errors import AttestError


class StorageError(AttestError, RuntimeError):
    """Base of storage failures."""


class DatabaseUnavailable(StorageError):
    """The database cannot be reached; the caller retries with backoff and skips nothing."""


class DatabaseRefused(StorageError):
    """Postgres refused a read for the department's role (column grant or role missing)."""
