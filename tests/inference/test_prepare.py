"""Start-up embeds the prototypes under its own timeout, not the pool's per-request one."""

from __future__ import annotations

import asyncio
import threading

import pytest

from inference.errors import InferenceTimeout
from inference.pool import ModelPool
from inference.tasks import Tasks
from tests.inference.fakes import FakeEncoder

PROTOTYPES = {"kind": {"invoice": ["an invoice"], "receipt": ["a receipt"]}}


def _slow_pool(encoder: FakeEncoder) -> ModelPool:
    return ModelPool(encoder, max_batch=64, max_wait_ms=1.0, queue_size=100, timeout_s=0.2,  # type: ignore[arg-type]
                     cache_size=0, warmup=False)


async def test_prepare_outlasts_the_per_request_timeout_of_a_slow_start() -> None:
    encoder = FakeEncoder(blocked=True)
    async with _slow_pool(encoder) as pool:
        tasks = Tasks(pool, PROTOTYPES)
        threading.Timer(0.8, encoder.gate.set).start()  # the model is busy for 4x the timeout
        await asyncio.wait_for(tasks.prepare(timeout_s=30), 20)
        assert (await tasks.classify("kind", ["an invoice"]))[0].label == "invoice"


async def test_a_live_request_still_has_the_pools_timeout() -> None:
    encoder = FakeEncoder(blocked=True)
    async with _slow_pool(encoder) as pool:
        tasks = Tasks(pool, PROTOTYPES)
        with pytest.raises(InferenceTimeout):
            await tasks.classify("kind", ["an invoice"])
        encoder.gate.set()
