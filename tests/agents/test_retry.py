"""Holding the stream through a database outage: retry DatabaseUnavailable, nothing else."""

from __future__ import annotations

import pytest

from agents.retry import until_stored
from storage.errors import DatabaseUnavailable


async def test_outage_is_retried_until_the_write_succeeds() -> None:
    attempts: list[int] = []

    def write() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise DatabaseUnavailable("connection refused")
        return "stored"

    assert await until_stored(write, max_backoff_s=0.01, what="test") == "stored"
    assert len(attempts) == 3


async def test_other_errors_are_not_retried() -> None:
    attempts: list[int] = []

    def write() -> None:
        attempts.append(1)
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError):
        await until_stored(write, max_backoff_s=0.01, what="test")
    assert len(attempts) == 1
