"""Faust's consumer gets Attest's fetch wait (it fixes 1.5 s, which the embedded broker
always waits out): a Faust or aiokafka upgrade that moves the attribute fails here."""

from __future__ import annotations

import faust
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from streams.fetch_wait import set_fetch_max_wait


async def test_the_worker_consumer_is_built_with_the_configured_fetch_wait() -> None:
    set_fetch_max_wait(37)
    app = faust.App("fetch-wait-test", broker="kafka://127.0.0.1:1", store="memory://")
    thread = AIOKafkaConsumerThread(app.consumer, loop=app.loop, beacon=app.consumer.beacon)
    consumer = thread._create_worker_consumer(app.transport)
    assert consumer._fetch_max_wait_ms == 37
