"""Whether the broker's log still holds a message a consumer is holding.

A consumer can hold messages its broker no longer has: the embedded broker keeps topics in
memory and forgets them when it restarts, and a topic can be deleted and recreated or
truncated by retention. A stage that waits for intake to decide such a message would wait
for ever, because intake will never read it (docs/reliability.md, the broker-restart case).

Why by hand: confluent-kafka answers "what is at offset N" only through a consumer, and
the embedded Tansu broker reports the base offset of its last record batch plus one as the
high watermark, so the end of a partition is read, not asked for (as in
operations/broker_reads.py).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

from confluent_kafka import (
    TIMESTAMP_CREATE_TIME,
    TIMESTAMP_LOG_APPEND_TIME,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from config.settings import Settings
from streams.admin import kafka_config


class LogProbe:
    """Reads single positions of a partition; joins no group and commits nothing."""

    def __init__(self, settings: Settings, timeout_s: float = 5.0) -> None:
        self._timeout_s = timeout_s
        # As intake judges freshness: the producer's CreateTime only where the settings say
        # the broker is one that keeps it (docs/events.md); LogAppendTime always.
        self._trust_create_time = settings.freshness_from_create_time
        self._arrived: datetime | None = None
        self._consumer = Consumer({
            **kafka_config(settings),
            "group.id": f"attest-probe-{uuid.uuid4().hex[:8]}",
            "client.id": f"attest-probe-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "error",
            "fetch.wait.max.ms": 100,
            "enable.partition.eof": True,
        })

    def _batches(self, wait_s: float) -> Iterator[list[Message]]:
        """Batches of the assigned partition as they arrive, until ``wait_s`` passes with none.

        In short slices because ``consume(n, timeout)`` returns only once it holds ``n``
        messages or the timeout has passed: one call with the full timeout made every probe
        of a partition with fewer than ``n`` messages left take the whole 5 s, end-of-partition
        marker or not (a broker restart's checks took 20 s for four partitions).
        """
        quiet_until = time.monotonic() + wait_s
        while time.monotonic() < quiet_until:
            batch = self._consumer.consume(500, 0.05)
            if batch:
                yield batch
                quiet_until = time.monotonic() + wait_s

    def holds(self, topic: str, partition: int, offset: int, sha256: bytes) -> bool | None:
        """Whether ``topic/partition@offset`` holds bytes whose SHA-256 is ``sha256``.

        False: the position is before the log's start, past its end, or holds other bytes;
        None: the broker did not answer in time.
        """
        return self.arrival(topic, partition, offset, sha256)[0]

    def arrival(self, topic: str, partition: int, offset: int,
                sha256: bytes) -> tuple[bool | None, datetime | None]:
        """``holds`` and, when it does, the record's broker timestamp (when it arrived)."""
        self._arrived = None
        try:
            low, high = self._consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=self._timeout_s)
        except KafkaException:
            return None, None
        if offset < low or high <= low:
            return False, None  # removed by retention, or the partition is empty
        # Read from the reported end's last message (never past ``offset``) to the real end.
        start = min(offset, max(low, high - 1))
        last = self._read(topic, partition, start, offset, sha256)
        if isinstance(last, bool):
            return last, self._arrived if last else None
        return (False if last is not None and last < offset else None), None

    def _read(self, topic: str, partition: int, start: int, offset: int,
              sha256: bytes) -> bool | int | None:
        """A bool once ``offset`` is read or out of range; else the last offset read
        (None: nothing read, or the broker failed)."""
        self._consumer.assign([TopicPartition(topic, partition, start)])
        last: int | None = None
        try:
            for batch in self._batches(self._timeout_s):
                for message in batch:
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            return last
                        if error.code() == KafkaError.OFFSET_OUT_OF_RANGE:
                            return False
                        return None
                    if message.offset() == offset:
                        same = hashlib.sha256(message.value() or b"").digest() == sha256
                        kind, millis = message.timestamp()
                        trusted = kind == TIMESTAMP_LOG_APPEND_TIME or (
                            kind == TIMESTAMP_CREATE_TIME and self._trust_create_time)
                        if same and trusted and millis >= 0:
                            self._arrived = datetime.fromtimestamp(millis / 1000, UTC)
                        return True if same else False
                    if message.offset() > offset:
                        return False  # compacted or the log moved on without it
                    last = message.offset()
            return last
        except KafkaException:
            return None
        finally:
            self._consumer.unassign()

    def span(self, topic: str, partition: int) -> tuple[int, int] | None:
        """(first offset held, next offset to be written) of a partition; None: no answer.

        The end is read from the reported one to the real one (see the module docstring).
        """
        try:
            low, high = self._consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=self._timeout_s)
        except KafkaException:
            return None
        if high <= low:
            return low, high
        last = high - 1
        self._consumer.assign([TopicPartition(topic, partition, last)])
        try:
            for batch in self._batches(self._timeout_s):
                for message in batch:
                    error = message.error()
                    if error is None:
                        last = max(last, message.offset())
                    elif error.code() == KafkaError._PARTITION_EOF:
                        return low, last + 1
                    else:
                        return None
            return None  # no end-of-partition marker in time: no answer
        except KafkaException:
            return None
        finally:
            self._consumer.unassign()

    def close(self) -> None:
        self._consumer.close()
