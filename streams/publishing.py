"""Publishing a batch's dead letters and audit records, held through a broker outage.

A send that fails because the broker went away (restarted, unreachable, a partition's leader
moving, a topic being recreated) is an outage, not a bad message. Exiting on it, as the
stages did, took the whole worker down at every broker restart (the fault suite's
broker-restart case saw `UnknownError` from the embedded broker's first produce after it
came back). Instead the stage holds its batch, whose offsets are not committed, and sends
again with capped backoff, as it does for Postgres (agents/retry.py). Sending again is safe:
audit records are stored once by their ``audit_id`` and dead letters are counted once by
their origin (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiokafka.errors import KafkaError

log = logging.getLogger("attest.worker")


async def until_published(publish: Callable[[], Awaitable[None]], max_backoff_s: float,
                          what: str) -> int:
    """Await ``publish()`` until it succeeds; return how many attempts failed first.

    Only Kafka's own errors are retried: anything else is a bug and propagates.
    """
    delay, failed = 0.2, 0
    while True:
        try:
            await publish()
            if failed:
                log.info("published %s after %d failed attempts", what, failed)
            return failed
        except KafkaError as exc:
            failed += 1
            log.warning("broker unavailable while publishing %s (%s: %s); retrying in %.1fs",
                        what, type(exc).__name__, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_backoff_s)
