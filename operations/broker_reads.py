"""Reading the broker for operators: partitions, watermarks, committed offsets, ranges.

A plain confluent-kafka consumer with a throwaway group id that never subscribes, so it
never joins (or disturbs) the workers' consumer groups: it assigns partitions explicitly.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from types import TracebackType

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from config.settings import Settings
from operations.errors import UnknownTopic
from operations.selection import PartitionRange
from operations.time_offsets import first_offset_at_or_after
from streams.admin import kafka_config
from streams.dead_letters import timestamp_at
from streams.errors import BrokerUnavailable


class BrokerReader:
    """One consumer for one command: use as a context manager."""

    def __init__(self, settings: Settings, timeout_s: float = 10.0) -> None:
        self._settings = settings
        self._timeout = timeout_s
        self._consumer = Consumer({
            **kafka_config(settings),
            "group.id": f"attest-operator-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            # librdkafka's own lines (a broker that is down) stay out of the terminal: log_level 0,
            # not a Python logger, whose callback runs on librdkafka's threads and can crash a
            # client destroyed while the broker fails (a stage died with -11 so).
            "log_level": 0,
            "socket.connection.setup.timeout.ms": int(timeout_s * 1000),
        })

    def __enter__(self) -> BrokerReader:
        return self

    def __exit__(self, *exc: object | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._consumer.close()

    def _unreachable(self, exc: Exception) -> BrokerUnavailable:
        error = exc.args[0] if exc.args else exc
        reason = error.str() if hasattr(error, "str") else str(error)
        return BrokerUnavailable(f"cannot reach Kafka at {self._settings.kafka_bootstrap} ({reason})")

    def partitions(self, topic: str) -> list[int]:
        """The topic's partition ids; ``UnknownTopic`` when the broker has no such topic."""
        try:
            metadata = self._consumer.list_topics(topic, timeout=self._timeout)
        except KafkaException as exc:
            raise self._unreachable(exc) from None
        described = metadata.topics.get(topic)
        if described is None or described.error is not None:
            if described is not None and described.error.code() not in (
                    KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
                raise self._unreachable(KafkaException(described.error))
            raise UnknownTopic(f"the broker has no topic {topic!r}")
        return sorted(described.partitions)

    def watermarks(self, topic: str, partitions: list[int] | None = None) -> dict[int, tuple[int, int]]:
        """(low, end) per partition: the first offset still held and the next to be written.

        The end is read, not only asked for: the embedded Tansu broker reports the base
        offset of the last record batch plus one as the high watermark, so a batch of 20
        looks like one message. Reading from that point to the end of the partition gives
        the real end on any broker, at the cost of one fetch.
        """
        out = {}
        for p in partitions if partitions is not None else self.partitions(topic):
            try:
                low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=self._timeout)
            except KafkaException as exc:
                raise self._unreachable(exc) from None
            out[p] = (low, self._last_offset(topic, p, high - 1) + 1 if high > low else high)
        return out

    def _last_offset(self, topic: str, partition: int, from_offset: int) -> int:
        """The offset of the last message at or after ``from_offset`` (itself if none follow)."""
        last = from_offset
        self._consumer.assign([TopicPartition(topic, partition, from_offset)])
        try:
            deadline = time.monotonic() + self._timeout
            while time.monotonic() < deadline:
                for msg in self._consumer.consume(500, 0.5):
                    if not msg.error():
                        last = max(last, msg.offset())
                    elif msg.error().code() == KafkaError._PARTITION_EOF:
                        return last
            return last
        finally:
            self._consumer.unassign()

    def committed(self, group: str, topic: str, partitions: list[int]) -> dict[int, int | None]:
        """A consumer group's committed offset per partition (None: nothing committed yet)."""
        probe = Consumer({**kafka_config(self._settings), "group.id": group,
                          "enable.auto.commit": False, "log_level": 0})
        try:
            found = probe.committed([TopicPartition(topic, p) for p in partitions],
                                    timeout=self._timeout)
        except KafkaException as exc:
            raise self._unreachable(exc) from None
        finally:
            probe.close()
        return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in found}

    def timestamp_at(self, topic: str, partition: int, offset: int) -> int | None:
        """The timestamp (ms) of the message at ``offset``, or of the next one present."""
        return timestamp_at(self._consumer, topic, partition, offset, self._timeout)

    def offset_for_time(self, topic: str, partition: int, low: int, high: int, at_ms: int) -> int:
        """The first offset in [low, high) of a message at or after ``at_ms`` (high if none)."""
        return first_offset_at_or_after(
            lambda offset: self.timestamp_at(topic, partition, offset), low, high, at_ms)

    def read(self, topic: str, ranges: list[PartitionRange]) -> Iterator[Message]:
        """Every message in the ranges, in offset order per partition, then stop.

        Ranges of the same partition are read one after another; ranges of different
        partitions together. A range whose messages are gone (compaction, retention) ends
        at the partition's end instead of waiting.
        """
        pending = sorted(ranges)
        while pending:
            wave: dict[int, PartitionRange] = {}
            later = []
            for r in pending:
                if r.partition in wave:
                    later.append(r)
                else:
                    wave[r.partition] = r
            pending = later
            yield from self._read_wave(topic, wave)

    def _read_wave(self, topic: str, wave: dict[int, PartitionRange]) -> Iterator[Message]:
        open_ranges = {p: r for p, r in wave.items() if r.size > 0}
        if not open_ranges:
            return
        self._consumer.assign([TopicPartition(topic, p, r.start) for p, r in open_ranges.items()])
        idle_since = time.monotonic()
        try:
            while open_ranges:
                # consume() hands over up to 500 messages per call: per-message poll() costs
                # more than the rest of reading.
                messages = self._consumer.consume(500, 0.1)
                if not messages:
                    if time.monotonic() - idle_since > self._timeout * 3:
                        raise BrokerUnavailable(
                            f"no progress reading {topic} for {self._timeout * 3:.0f}s")
                    continue
                idle_since = time.monotonic()
                for msg in messages:
                    p = msg.partition()
                    if msg.error():
                        if msg.error().code() == KafkaError._PARTITION_EOF:
                            open_ranges.pop(p, None)
                        elif msg.error().code() in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN):
                            raise self._unreachable(KafkaException(msg.error()))
                        continue
                    current = open_ranges.get(p)
                    if current is None or msg.offset() < current.start:
                        continue
                    if msg.offset() >= current.end:
                        open_ranges.pop(p, None)
                        continue
                    yield msg
                    if msg.offset() + 1 >= current.end:
                        open_ranges.pop(p, None)
        finally:
            self._consumer.unassign()
