"""Hold the stream through a database outage: retry with capped backoff, never skip."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

from storage.errors import DatabaseUnavailable

T = TypeVar("T")
log = logging.getLogger("attest.agents")


async def until_stored(fn: Callable[[], T], max_backoff_s: float, what: str) -> T:
    """Run blocking ``fn`` in a thread until it succeeds; back off while the DB is down."""
    delay = 0.2
    while True:
        try:
            return await asyncio.to_thread(fn)
        except DatabaseUnavailable as exc:
            log.warning("database unavailable while %s (%s); retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_backoff_s)
