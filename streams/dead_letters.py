"""Reading the dead-letter topic: every letter up to the current end, without a consumer group."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, TopicPartition

from config.settings import Settings
from streams.admin import kafka_config
from streams.errors import BrokerUnavailable
from streams.topics import DEAD_LETTER


@dataclass(frozen=True)
class StoredLetter:
    """One message of the dead-letter topic, with its reason headers decoded."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, str]

    @property
    def reason(self) -> str:
        return self.headers.get("attest-reason", "?")

    @property
    def origin(self) -> str:
        h = self.headers
        return (f"{h.get('attest-source-topic', '?')}/{h.get('attest-source-partition', '?')}"
                f"/{h.get('attest-source-offset', '?')}")

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"


def read_letters(settings: Settings, timeout_s: float = 30.0) -> Iterator[StoredLetter]:
    """Every letter from the oldest to the end as it is now (a snapshot, then stop)."""
    topic = DEAD_LETTER.name(settings)
    consumer = Consumer({
        **kafka_config(settings),
        "group.id": f"attest-dlq-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
    })
    try:
        try:
            metadata = consumer.list_topics(topic, timeout=10)
        except KafkaException as exc:
            raise BrokerUnavailable(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from None
        if topic not in metadata.topics or metadata.topics[topic].error is not None:
            return
        ends: dict[int, int] = {}
        assignment = []
        for partition in metadata.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            if high > low:
                ends[partition] = high
                assignment.append(TopicPartition(topic, partition, low))
        if not assignment:
            return
        consumer.assign(assignment)
        deadline = time.monotonic() + timeout_s
        while ends and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            headers = {k: (v or b"").decode("utf-8", "replace") for k, v in (msg.headers() or [])}
            yield StoredLetter(msg.partition(), msg.offset(), msg.key(), msg.value() or b"", headers)
            if msg.offset() + 1 >= ends.get(msg.partition(), 0):
                ends.pop(msg.partition(), None)
    finally:
        consumer.close()
