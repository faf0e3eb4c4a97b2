"""Read a Kafka topic from its beginning to its end."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, KafkaError, Message

from config.settings import Settings
from streams.admin import kafka_config


def read_topic(settings: Settings, topic: str, idle_s: float = 3.0, max_s: float = 30.0) -> list[Message]:
    """Every message of ``topic`` from the beginning, stopping after ``idle_s`` of silence.

    A fresh consumer group each call, so nothing another reader committed is skipped.
    """
    consumer = Consumer({
        **kafka_config(settings),
        "group.id": f"test-read-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
    })
    consumer.subscribe([topic])
    out: list[Message] = []
    start = last = time.monotonic()
    try:
        while time.monotonic() - start < max_s:
            msg = consumer.poll(0.3)
            if msg is None:
                if out and time.monotonic() - last > idle_s:
                    break
                if not out and time.monotonic() - start > idle_s * 3:
                    break
                continue
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(msg.error().str())
                continue
            out.append(msg)
            last = time.monotonic()
    finally:
        consumer.close()
    return out
