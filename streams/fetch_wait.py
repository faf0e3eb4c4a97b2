"""The consumer's fetch wait, which Faust fixes at 1.5 s.

Why this exists: Faust creates its aiokafka consumer with ``fetch_max_wait_ms=1500`` and no
setting to change it. A broker answers a fetch when data arrives *or* that wait runs out;
the embedded Tansu broker always waits it out. Measured on the embedded stack with one
message every 130 ms: 622 ms median delivery latency at 1,500 ms, 4 ms at 10 ms. At low
rates that wait was most of Attest's end-to-end latency. This sets aiokafka's own
attribute after Faust built the consumer and before it starts; the test in
tests/streams/test_fetch_wait.py fails if a Faust or aiokafka upgrade moves it.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

_original = AIOKafkaConsumerThread._create_worker_consumer
_wait_ms: int | None = None


def _create_worker_consumer(self: Any, transport: Any) -> Any:
    consumer = _original(self, transport)
    if _wait_ms is not None:
        if not hasattr(consumer, "_fetch_max_wait_ms"):
            raise RuntimeError("aiokafka's consumer has no _fetch_max_wait_ms; update streams/fetch_wait.py")
        consumer._fetch_max_wait_ms = _wait_ms
    return consumer


def set_fetch_max_wait(ms: int) -> None:
    """Every Faust worker consumer created after this waits at most ``ms`` per fetch."""
    global _wait_ms
    _wait_ms = ms
    AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer
