"""Reading the dead-letter topic: every letter up to the current end, without a consumer group.

A rejected message delivered again after a worker crash is dead-lettered again, so the
topic may hold the same rejection twice; ``StoredLetter.identity`` (source position plus
the SHA-256 of the bytes) is what tells one rejected message from another.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from config.settings import Settings
from operations.time_offsets import first_offset_at_or_after
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

    @property
    def source_topic(self) -> str | None:
        return self.headers.get("attest-source-topic")

    @property
    def source_partition(self) -> int | None:
        return _int_or_none(self.headers.get("attest-source-partition"))

    @property
    def source_offset(self) -> int | None:
        return _int_or_none(self.headers.get("attest-source-offset"))

    @property
    def rejected_at(self) -> datetime | None:
        """When the worker rejected it (the ``attest-rejected-at`` header), if readable."""
        try:
            return datetime.fromisoformat(self.headers.get("attest-rejected-at", ""))
        except ValueError:
            return None

    @property
    def identity(self) -> tuple[str | None, int | None, int | None, str]:
        """One rejected message: where it was read and what its bytes were.

        The same message dead-lettered again after a crash has the same identity; a new
        message on a reused offset (a recreated topic) has other bytes, so another one.
        """
        return (self.source_topic, self.source_partition, self.source_offset,
                hashlib.sha256(self.value).hexdigest())


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def read_letters(
    settings: Settings, timeout_s: float = 30.0, since: datetime | None = None
) -> Iterator[StoredLetter]:
    """Every letter from the oldest (or the first written at ``since``) to the end as it is now.

    A snapshot: letters written while reading are not waited for. ``since`` is found by a
    binary search on the broker's timestamps (log-append order), so the last hour of a long
    topic costs a few reads, not the whole topic.
    """
    topic = DEAD_LETTER.name(settings)
    consumer = Consumer({
        **kafka_config(settings),
        "group.id": f"attest-dlq-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        # librdkafka's own lines (a broker that is down) stay out of the terminal: log_level 0,
        # not a Python logger, whose callback runs on librdkafka's threads and can crash a
        # client destroyed while the broker fails (a stage died with -11 so).
        "log_level": 0,
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
            try:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            except KafkaException as exc:
                raise BrokerUnavailable(f"cannot read {topic}: {exc}") from None
            if since is not None and high > low:
                at_ms = int(since.timestamp() * 1000)
                low = first_offset_at_or_after(
                    lambda offset, p=partition: timestamp_at(consumer, topic, p, offset), low, high, at_ms)
            if high > low:
                ends[partition] = high
                assignment.append(TopicPartition(topic, partition, low))
        if not assignment:
            return
        consumer.assign(assignment)
        deadline = time.monotonic() + timeout_s
        while ends and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    ends.pop(msg.partition(), None)
                continue
            headers = {k: (v or b"").decode("utf-8", "replace") for k, v in (msg.headers() or [])}
            # No stop at the reported high watermark: the embedded Tansu broker reports the
            # last record batch's base offset there, so the end of partition decides.
            yield StoredLetter(msg.partition(), msg.offset(), msg.key(), msg.value() or b"", headers)
    finally:
        consumer.close()


def timestamp_at(consumer: Consumer, topic: str, partition: int, offset: int,
                 timeout_s: float = 10.0) -> int | None:
    """The broker timestamp (ms) of the message at ``offset`` (or the next one present);
    None at the end of the partition or after ``timeout_s``. ``consumer`` is assigned to that
    one position for the call (one implementation for the dead-letter and replay lookups)."""
    consumer.assign([TopicPartition(topic, partition, offset)])
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    return None
                continue
            return msg.timestamp()[1]
        return None
    finally:
        consumer.unassign()
