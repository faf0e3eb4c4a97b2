"""Every stage's consumer: whole batches from librdkafka in place of Faust's per-message stream.

Why: with verification, sealing and storing batched, Faust's consumer path (a message object,
an event, a stream step and an acknowledgement per record, all in the one Python thread) was
the largest remaining cost of intake (docs/performance.md); and Faust commits past a gap in
the offsets a fetch hands over, which the embedded broker was seen to leave (``_skipped_over``).
``confluent_kafka.Consumer`` fetches and decodes in librdkafka's threads and hands over up to
``batch_size`` records in one call.

The delivery discipline is the Faust path's: a batch's offsets are committed only after its
rows committed and its dead letters and audit records were delivered (at-least-once with
idempotent effects, docs/reliability.md). Rebalance callbacks run inside ``consume()``, which
is called only between batches; with one batch in flight (the default) partitions never move
under it. With several (``BatchStage``'s concurrency), a batch read before its partition was
revoked, assigned again or rewound commits nothing for it (``Batch.epochs``): its records are
delivered again, never skipped. librdkafka drops what it prefetched for a revoked partition.

The object also exposes the bookkeeping ``streams.log_reset.LogResetGuard`` reads of a Faust
consumer (``_read_offset``, ``_committed_offset``, ``assignment()``, ``seek()``), so the same
guard rewinds a partition whose log started again (librdkafka resets a position only on
OFFSET_OUT_OF_RANGE, which the embedded broker does not send).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple

from confluent_kafka import (
    TIMESTAMP_CREATE_TIME,
    TIMESTAMP_LOG_APPEND_TIME,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from agents.messages import IncomingMessage

log = logging.getLogger("attest.worker")


class TP(NamedTuple):
    """A partition, shaped like Faust's and aiokafka's (``.topic``, ``.partition``)."""

    topic: str
    partition: int


def broker_time(message: Message, trust_create_time: bool) -> datetime | None:
    """When the record reached the broker, if the record says so credibly (see
    ``streams.app._broker_time``: a producer's CreateTime counts only where configured)."""
    kind, millis = message.timestamp()
    if millis <= 0 or kind not in (TIMESTAMP_LOG_APPEND_TIME, TIMESTAMP_CREATE_TIME):
        return None
    if kind == TIMESTAMP_CREATE_TIME and not trust_create_time:
        return None
    try:
        return datetime.fromtimestamp(millis / 1000, UTC)
    except (OverflowError, ValueError, OSError):
        return None


def incoming(message: Message, trust_create_time: bool, now: datetime) -> IncomingMessage:
    return IncomingMessage(
        topic=message.topic() or "",
        partition=message.partition() or 0,
        offset=message.offset() or 0,
        key=message.key(),
        value=message.value() or b"",
        received_at=now,
        broker_time=broker_time(message, trust_create_time),
    )


def next_offsets(batch: list[IncomingMessage]) -> dict[TP, int]:
    """The offset to commit per partition: one past the highest offset of the batch."""
    offsets: dict[TP, int] = {}
    for message in batch:
        tp = TP(message.topic, message.partition)
        offsets[tp] = max(offsets.get(tp, -1), message.offset + 1)
    return offsets


#: How many times the same gap is read before it is taken to hold no record.
GAP_READS = 3


class Batch(list[IncomingMessage]):
    """A batch as handed over, with the epoch each of its partitions was read under."""

    def __init__(self) -> None:
        super().__init__()
        self.epochs: dict[TP, int] = {}


class BatchConsumer:
    """One member of a consumer group, read in batches; every call from one thread at a time.

    ``poll_batch`` and ``commit`` block (run them with ``asyncio.to_thread``); ``seek`` only
    records a rewind, applied before the next ``poll_batch``, because librdkafka may only
    seek a partition between ``consume()`` calls of the same consumer.
    """

    def __init__(self, config: dict[str, object], group: str, topics: list[str], *,
                 batch_size: int, wait_s: float, trust_create_time: bool,
                 stage: str = "intake") -> None:
        #: The stage's name in log lines ("intake offsets", "audit revoked ...").
        self._stage = stage
        self._batch_size = batch_size
        self._wait_s = wait_s
        self._trust_create_time = trust_create_time
        #: What LogResetGuard reads: last offset read and next offset committed, per partition.
        self._read_offset: dict[TP, int] = {}
        self._committed_offset: dict[TP, int] = {}
        self._assigned: set[TP] = set()
        #: The log-reset guard's rewinds: applied (seek) and committed before the next batch.
        self._rewinds: dict[TP, int] = {}
        #: Re-reads of a gap in the offsets handed over (``_skipped_over``): seek only, never
        #: committed (batches before the gap may still be in flight).
        self._rereads: dict[TP, int] = {}
        #: The last gap seen per partition and how many times it was read.
        self._gaps: dict[TP, tuple[tuple[int, int], int]] = {}
        #: Bumped when a partition is assigned, revoked or rewound by the guard: a batch read
        #: under an older epoch commits nothing for that partition (``commit``).
        self._epoch: dict[TP, int] = {}
        #: When a commit was last refused: ``_commit_again`` sends the offsets again.
        self._commit_refused_at: float | None = None
        self._commit_failing = False
        #: librdkafka calls of this consumer never overlap (close waits for a consume).
        self._lock = threading.Lock()
        self._consumer = Consumer({
            **config,
            "group.id": group,
            "client.id": f"attest-{stage}-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "on_commit": self._on_commit,
        })
        self._consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                                 on_lost=self._on_revoke)

    # -- rebalance callbacks (inside consume(), between batches) ------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for p in partitions:
            tp = TP(p.topic, p.partition)
            self._assigned.add(tp)
            self._epoch[tp] = self._epoch.get(tp, 0) + 1
        log.info("%s assigned %s", self._stage, ", ".join(f"{p.topic}/{p.partition}" for p in partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # A rewind not applied yet is committed instead, so the next owner does not start
        # from a position of the old log.
        pending = [TopicPartition(p.topic, p.partition, self._rewinds[TP(p.topic, p.partition)])
                   for p in partitions if TP(p.topic, p.partition) in self._rewinds]
        if pending:
            self._commit_rewinds(consumer, pending)
        for p in partitions:
            tp = TP(p.topic, p.partition)
            self._assigned.discard(tp)
            self._epoch[tp] = self._epoch.get(tp, 0) + 1
            for held in (self._read_offset, self._committed_offset, self._rewinds, self._rereads,
                         self._gaps):
                held.pop(tp, None)
        if partitions:
            log.info("%s revoked %s", self._stage, ", ".join(f"{p.topic}/{p.partition}" for p in partitions))

    # -- what LogResetGuard uses -------------------------------------------------------------

    def assignment(self) -> set[TP]:
        return set(self._assigned)

    async def seek(self, tp: TP, offset: int) -> None:
        self._rewinds[tp] = offset
        self._rereads.pop(tp, None)
        self._gaps.pop(tp, None)
        self._read_offset[tp] = offset - 1

    # -- the loop's calls -----------------------------------------------------------------

    @staticmethod
    def _commit_rewinds(consumer: Consumer, rewound: list[TopicPartition]) -> None:
        """Commit the offsets a rewind starts from: the group then no longer holds positions
        of a log that started again, whoever reads the partition next."""
        try:
            consumer.commit(offsets=rewound, asynchronous=False)
        except KafkaException as exc:
            log.warning("could not commit the rewound offsets (%s); the guard checks again",
                        exc.args[0].str())

    def _seek(self, pending: dict[TP, int]) -> list[TP]:
        """Seek each assigned partition of ``pending`` (emptied); those that could not be
        sought stay in it for the next poll. Returns the partitions sought."""
        sought = []
        for tp in list(pending):
            offset = pending.pop(tp)
            if tp not in self._assigned:
                continue  # revoked meanwhile (_on_revoke committed a guard rewind)
            try:
                self._consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
            except KafkaException as exc:
                # The fetcher of a just-assigned partition may not be started yet: retry.
                log.warning("%s/%d: could not rewind yet (%s); trying again", tp.topic,
                            tp.partition, exc.args[0].str())
                pending.setdefault(tp, offset)
                continue
            sought.append(tp)
        return sought

    def _apply_rewinds(self) -> None:
        offsets = dict(self._rewinds)
        rewound = self._seek(self._rewinds)
        for tp in rewound:
            self._epoch[tp] = self._epoch.get(tp, 0) + 1  # batches of the old log commit nothing
        if rewound:
            self._commit_rewinds(self._consumer, [TopicPartition(tp.topic, tp.partition, offsets[tp])
                                                  for tp in rewound])
        self._seek(self._rereads)

    def poll_batch(self, on_error: Callable[[KafkaError], None] | None = None) -> Batch:
        """What is queued, up to ``batch_size`` records; only when nothing is queued, wait at
        most ``wait_s`` for the first record, then take what came with it.

        Why not ``consume(batch_size, wait_s)``: librdkafka then waits the whole ``wait_s``
        unless the batch fills, so at low rates every record waited for the window. Taking
        what accumulated while the previous batch was decided keeps batches large under load
        (the queue is full) and short at low rates, where the CPU is there to spare.
        """
        with self._lock:
            self._apply_rewinds()
            self._commit_again()
            records = self._consumer.consume(self._batch_size, 0)
            if not records:
                records = self._consumer.consume(1, self._wait_s)
                if records and self._batch_size > 1:
                    records += self._consumer.consume(self._batch_size - 1, 0)
        now = datetime.now(UTC)
        batch = Batch()
        for record in records:
            error = record.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF and on_error is not None:
                    on_error(error)
                continue
            tp = TP(record.topic() or "", record.partition() or 0)
            if tp not in self._assigned:
                continue  # revoked by a rebalance served in the second consume(): its next owner reads it
            if tp in self._rewinds or tp in self._rereads:
                continue  # read from a position a rewind or a re-read reads again
            if self._skipped_over(tp, record.offset() or 0):
                continue
            batch.append(incoming(record, self._trust_create_time, now))
            batch.epochs[tp] = self._epoch.get(tp, 0)
            self._read_offset[tp] = batch[-1].offset
        return batch

    def _skipped_over(self, tp: TP, offset: int) -> bool:
        """True when records before ``offset`` were not handed over: read them again first.

        Seen on the embedded broker under concurrent producers: a fetch answered past a
        record that its log does hold (2026-12-02, one record in 9,011 at 300 events/s,
        docs/reliability.md). Committing the batch after it would lose that record for good,
        so the partition is read again from the first offset missing (a seek, not committed).
        Offsets with no record at all (a transaction marker, a compacted topic, records
        removed by retention) come back the same however often they are read: after
        ``GAP_READS`` reads of the same gap it is accepted, with an error in the log.
        """
        last = self._read_offset.get(tp)
        if last is None or offset <= last + 1:
            return False
        gap = (last + 1, offset)
        seen, reads = self._gaps.get(tp, (None, 0))
        reads = reads + 1 if seen == gap else 1
        if reads >= GAP_READS:
            del self._gaps[tp]
            log.error("%s/%d: offsets %d to %d came back empty %d times; taken to hold no "
                      "record, going on", tp.topic, tp.partition, gap[0], gap[1] - 1, reads)
            return False
        self._gaps[tp] = (gap, reads)
        log.warning("%s/%d: the broker handed over offset %d after %d, skipping %d record(s); "
                    "reading again from offset %d", tp.topic, tp.partition, offset, last,
                    offset - last - 1, last + 1)
        self._rereads.setdefault(tp, last + 1)
        return True

    def commit(self, batch: list[IncomingMessage], *, wait: bool = True) -> bool:
        """Commit the batch's offsets (after its effects are durable); False when refused.

        A refused commit (a rebalance, the broker away) is sent again (``_commit_again``);
        until it lands, the batch is at worst delivered again to whoever owns its partitions
        next, and every effect is idempotent. That is also why the loop does not wait
        (``wait=False``): the commit is sent in order behind the earlier ones while the next
        batch is decided, a refusal is reported to ``_on_commit``, and ``close`` commits the
        last offsets synchronously.
        """
        epochs = getattr(batch, "epochs", {})
        offsets = {tp: offset for tp, offset in next_offsets(batch).items()
                   if tp in self._assigned and tp not in self._rewinds
                   and epochs.get(tp, self._epoch.get(tp, 0)) == self._epoch.get(tp, 0)}
        if not offsets:
            return True
        try:
            with self._lock:
                self._consumer.commit(
                    offsets=[TopicPartition(tp.topic, tp.partition, o) for tp, o in offsets.items()],
                    asynchronous=not wait)
        except KafkaException as exc:
            self._committed_offset.update(offsets)
            self._refused(exc.args[0].str())
            return False
        self._committed_offset.update(offsets)
        return True

    def _refused(self, why: str) -> None:
        if not self._commit_failing:
            log.warning("could not commit %s offsets (%s); sending them again every second",
                        self._stage, why)
        self._commit_failing = True
        self._commit_refused_at = time.monotonic()

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """The result of a commit not waited for (served inside ``consume()``)."""
        errors = [error] if error is not None else [p.error for p in partitions if p.error]
        errors = [e for e in errors if e.code() != KafkaError._NO_OFFSET]
        if errors:
            self._refused(errors[0].str())
        elif self._commit_failing and partitions:
            self._commit_failing = False
            log.info("%s offsets committed again", self._stage)

    def _commit_again(self) -> None:
        """Send the offsets of a refused commit again (a rebalance, the broker away), at most
        once a second. Waiting for the next batch's commit to carry them is not enough: a
        partition that goes quiet gets none, its group's committed offset stays behind what
        is decided, and the stages after intake wait on intake's committed offsets."""
        refused = self._commit_refused_at
        if refused is None or time.monotonic() - refused < 1.0:
            return
        self._commit_refused_at = None
        offsets = [TopicPartition(tp.topic, tp.partition, offset)
                   for tp, offset in dict(self._committed_offset).items()
                   if tp in self._assigned and tp not in self._rewinds]
        if not offsets:
            self._commit_failing = False
            return
        try:
            self._consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            self._refused(exc.args[0].str())

    def close(self) -> None:
        """Commit the last offsets and leave the group: a commit not waited for may still be
        in flight, and the next owner should not read again what this member finished."""
        last = [TopicPartition(tp.topic, tp.partition, offset)
                for tp, offset in dict(self._committed_offset).items() if tp in self._assigned]
        with self._lock:
            if last:
                try:
                    self._consumer.commit(offsets=last, asynchronous=False)
                except (KafkaException, RuntimeError) as exc:  # the broker away, or closed
                    log.warning("could not commit the last %s offsets: %s", self._stage, exc)
            try:
                self._consumer.close()
            except (KafkaException, RuntimeError) as exc:  # closed already, or the broker away
                log.warning("closing the %s consumer: %s", self._stage, exc)


def consumer_settings(settings: Any) -> dict[str, object]:
    """librdkafka properties matching the Faust consumer's (session, heartbeat, fetch wait)."""
    return {
        "session.timeout.ms": int(settings.session_timeout_s * 1000),
        "heartbeat.interval.ms": int(settings.heartbeat_interval_s * 1000),
        "fetch.wait.max.ms": settings.fetch_max_wait_ms,
        # Hold little ahead of the batch being processed: a rebalance drops it anyway.
        "queued.max.messages.kbytes": 16384,
        # librdkafka sends this as the JoinGroup rebalance timeout too: how long the
        # coordinator waits for every known member to rejoin. At 1,000 s, a member that dies
        # during a rebalance may hold its group's join for that long: the suspected cause of
        # a test-suite worker whose intake was never assigned (the group stuck rebalancing on
        # the embedded broker, 2026-12-03). 60 s is Faust's rebalance timeout. A batch held
        # longer (a Postgres outage) loses its partitions; the member rejoins at its next
        # poll, its batch commits nothing (``Batch.epochs``) and is delivered again, which
        # every effect tolerates.
        "max.poll.interval.ms": max(60_000, int(settings.session_timeout_s * 1000)),
        # One protocol: the embedded broker refuses a join offering several (librdkafka's
        # default is "range,roundrobin") as an inconsistent group protocol.
        "partition.assignment.strategy": "roundrobin",
    }
