"""The audit topic as read by ``attest audit``: the newest published checkpoint, and ``tail``.

The sink publishes every checkpoint it signs to the audit topic as an ``audit.checkpoint``
record (agents/audit_sink.py: ``detail.checkpoint`` holds the signed note). The topic is a
witness outside the database: rows deleted after the last *stored* checkpoint, together
with the checkpoints that covered them, are still proven to have existed by the newest
checkpoint on the topic. ``newest_published_checkpoint`` finds it by reading each partition
backwards from its end, a window at a time, until a checkpoint turns up.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError
from pydantic import ValidationError

from audit.chain import CHECKPOINT_ACTION
from audit.checkpoints import parse_checkpoint
from config.settings import Settings
from operations.broker_reads import BrokerReader
from operations.selection import PartitionRange
from schemas.audit import AuditRecord, records_in
from streams.admin import ensure_topics, kafka_config
from streams.topics import AUDIT

_WINDOW = 2000  # messages read per step back from a partition's end


@dataclass(frozen=True)
class TopicCheckpoint:
    """A checkpoint as published on the audit topic, and where it was found."""

    count: int
    head_hash: str
    text: str
    partition: int
    offset: int


@dataclass(frozen=True)
class TopicCheckpoints:
    """What the topic says: its newest checkpoint (by count), and any that do not parse."""

    topic: str
    newest: TopicCheckpoint | None
    malformed: tuple[str, ...] = field(default=())


def _checkpoints_in(value: bytes | None, partition: int, offset: int,
                    malformed: list[str]) -> list[TopicCheckpoint]:
    try:
        records = records_in(value or b"")
    except ValidationError:
        return []  # not an audit record at all: the sink dead-letters it; no checkpoint
    out = []
    for record in records:
        if record.action != CHECKPOINT_ACTION:
            continue
        text = record.detail.get("checkpoint")
        try:
            if not isinstance(text, str):
                raise ValueError("no signed note in detail.checkpoint")
            parsed = parse_checkpoint(text)
        except ValueError as exc:
            malformed.append(f"partition {partition} offset {offset} ({exc})")
            continue
        out.append(TopicCheckpoint(parsed.count, parsed.head_hash, text, partition, offset))
    return out


def newest_published_checkpoint(settings: Settings, timeout_s: float = 10.0) -> TopicCheckpoints:
    """The checkpoint with the highest count among each partition's most recent ones.

    Raises ``BrokerUnavailable`` when Kafka cannot be reached and ``UnknownTopic`` when the
    audit topic does not exist (operations.broker_reads). Partitions are read backwards from
    their end until a window holds a checkpoint: the sink publishes checkpoints in count
    order, so a partition's last one is its newest.
    """
    topic = AUDIT.name(settings)
    malformed: list[str] = []
    newest: TopicCheckpoint | None = None
    with BrokerReader(settings, timeout_s) as reader:
        for partition, (low, end) in sorted(reader.watermarks(topic).items()):
            high, window = end, _WINDOW
            while high > low:
                start = max(low, high - window)
                found = [cp for msg in reader.read(topic, [PartitionRange(partition, start, high)])
                         for cp in _checkpoints_in(msg.value(), partition, msg.offset(), malformed)]
                if found:
                    best = max(found, key=lambda c: (c.count, c.offset))
                    if newest is None or best.count > newest.count:
                        newest = best
                    break
                high, window = start, window * 2
    return TopicCheckpoints(topic, newest, tuple(malformed))


# --- attest audit tail ----------------------------------------------------------------------


@dataclass(frozen=True)
class TailItem:
    """One message of the audit topic as ``tail`` shows it: records, or why there are none."""

    records: tuple[AuditRecord, ...] = ()
    broker_error: str | None = None
    unparseable_offset: int | None = None


def follow_audit_topic(
    settings: Settings, from_beginning: bool = False, count: int | None = None,
    idle_exit: float | None = None,
) -> Iterator[TailItem]:
    """The audit topic's messages as they arrive, with a throwaway consumer group.

    Stops after ``count`` messages or ``idle_exit`` seconds without one; otherwise runs until
    the caller stops iterating (closing the generator closes the consumer).
    """
    ensure_topics(settings)
    consumer = Consumer({
        **kafka_config(settings),
        "group.id": f"attest-tail-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest" if from_beginning else "latest",
        "enable.auto.commit": False,
        "session.timeout.ms": int(settings.session_timeout_s * 1000),
    })
    consumer.subscribe([AUDIT.name(settings)])
    seen, last = 0, time.monotonic()
    try:
        while count is None or seen < count:
            msg = consumer.poll(0.5)
            if msg is None:
                if idle_exit is not None and time.monotonic() - last > idle_exit:
                    break
                continue
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    yield TailItem(broker_error=msg.error().str())
                continue
            last = time.monotonic()
            seen += 1
            try:
                yield TailItem(records=tuple(records_in(msg.value())))
            except ValidationError:
                yield TailItem(unparseable_offset=msg.offset())
    finally:
        consumer.close()
