"""A broker outage while publishing holds the batch and sends again; a bug still propagates."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiokafka.errors import KafkaConnectionError, UnknownError

from streams.publishing import until_published


def test_kafka_errors_are_retried_until_the_batch_is_published(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The embedded broker's first produce after a restart failed with UnknownError, and the
    # stage exited, taking the worker down; the outage must hold the batch instead.
    failures = [KafkaConnectionError("connection closed"), UnknownError()]
    published: list[int] = []

    async def publish() -> None:
        if failures:
            raise failures.pop(0)
        published.append(1)

    with caplog.at_level(logging.WARNING, logger="attest.worker"):
        failed = asyncio.run(until_published(publish, 0.01, "a test batch"))
    assert failed == 2
    assert published == [1]
    assert sum("broker unavailable while publishing a test batch" in r.getMessage()
               for r in caplog.records) == 2


def test_an_error_that_is_not_kafkas_is_not_retried() -> None:
    calls = 0

    async def publish() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError):
        asyncio.run(until_published(publish, 0.01, "a test batch"))
    assert calls == 1
