"""Storage errors: an outage (retry and hold the stream) versus anything else."""

from __future__ import annotations


class StorageError(RuntimeError):
    """Base of storage failures."""


class DatabaseUnavailable(StorageError):
    """The database cannot be reached; the caller retries with backoff and skips nothing."""
