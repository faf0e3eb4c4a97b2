"""Intake's batch consumer on the real broker: batches, commits after the caller says so,
rewinds asked for by the log-reset guard."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
import uuid
from datetime import UTC, datetime

import pytest
from confluent_kafka import KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from agents.messages import IncomingMessage
from config.settings import Settings
from streams.admin import kafka_config
from streams.batch_consumer import (
    GAP_READS,
    TP,
    Batch,
    BatchConsumer,
    consumer_settings,
    next_offsets,
)
from streams.offsets import CommittedOffsets
from streams.producer import OutgoingMessage, send_all


def _message(topic: str, partition: int, offset: int) -> IncomingMessage:
    return IncomingMessage(topic, partition, offset, None, b"x", datetime.now(UTC))


def test_the_offset_committed_is_one_past_the_highest_of_each_partition() -> None:
    batch = [_message("a", 0, 7), _message("a", 0, 5), _message("a", 1, 0), _message("b", 0, 3)]
    assert next_offsets(batch) == {TP("a", 0): 8, TP("a", 1): 1, TP("b", 0): 4}
    assert next_offsets([]) == {}


def _fresh_topic(settings: Settings, partitions: int = 2) -> str:
    name = f"bc-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(kafka_config(settings))
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result(15)
    return name


def _consumer(settings: Settings, group: str, topic: str) -> BatchConsumer:
    return BatchConsumer({**kafka_config(settings), **consumer_settings(settings)}, group,
                         [topic], batch_size=100, wait_s=0.2, trust_create_time=True)


def _drain(consumer: BatchConsumer, want: int, timeout_s: float = 60) -> Batch:
    """The batches handed over until ``want`` records came, as one batch (epochs kept)."""
    got = Batch()
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        batch = consumer.poll_batch()
        got.extend(batch)
        got.epochs.update(batch.epochs)
    return got


@pytest.mark.integration
def test_a_batch_is_committed_only_when_the_caller_commits_it(stack_settings: Settings) -> None:
    topic = _fresh_topic(stack_settings)
    send_all(stack_settings, topic, [OutgoingMessage(key=str(i).encode(), value=f"v{i}".encode())
                                     for i in range(40)])
    group = f"bc-{uuid.uuid4().hex[:6]}"
    consumer = _consumer(stack_settings, group, topic)
    try:
        batch = _drain(consumer, 40)
        assert sorted(m.value for m in batch) == sorted(f"v{i}".encode() for i in range(40))
        assert all(m.broker_time is not None for m in batch)  # the producer's CreateTime, trusted
        offsets = CommittedOffsets(stack_settings, group)
        positions = [(topic, 0), (topic, 1)]
        assert set(offsets.committed(positions).values()) == {-1001}  # nothing yet
        assert consumer.commit(batch)
        ends = {(m.topic, m.partition): 0 for m in batch}
        for m in batch:
            ends[(m.topic, m.partition)] = max(ends[(m.topic, m.partition)], m.offset + 1)
        assert offsets.committed(positions) == ends
        assert consumer._committed_offset == {TP(t, p): o for (t, p), o in ends.items()}
        offsets.close()
    finally:
        consumer.close()


@pytest.mark.integration
def test_a_rewind_reads_the_partition_again_from_the_offset_asked(stack_settings: Settings) -> None:
    topic = _fresh_topic(stack_settings, partitions=1)
    send_all(stack_settings, topic, [OutgoingMessage(key=b"k", value=f"v{i}".encode())
                                     for i in range(10)])
    group = f"bc-{uuid.uuid4().hex[:6]}"
    consumer = _consumer(stack_settings, group, topic)
    try:
        first = _drain(consumer, 10)
        assert len(first) == 10
        assert consumer._read_offset == {TP(topic, 0): 9}
        assert consumer.assignment() == {TP(topic, 0)}
        asyncio.run(consumer.seek(TP(topic, 0), 4))
        again = _drain(consumer, 6)
        assert [m.offset for m in again] == list(range(4, 10))
        # The rewind was committed as it was applied: whoever reads the partition next starts
        # there, not at a position the group held before.
        offsets = CommittedOffsets(stack_settings, group)
        assert offsets.committed([(topic, 0)]) == {(topic, 0): 4}
        # A batch read before the rewind (still in flight when it came) commits nothing for
        # the partition: its offsets belong to the position the rewind replaced.
        assert consumer.commit(first)
        assert offsets.committed([(topic, 0)]) == {(topic, 0): 4}
        offsets.close()
    finally:
        consumer.close()


@pytest.mark.integration
def test_a_commit_not_waited_for_is_made_durable_by_close(stack_settings: Settings) -> None:
    """The loop does not wait for its commits; leaving the group must still leave the offsets
    of every finished batch committed, or the next owner reads them all again."""
    topic = _fresh_topic(stack_settings)
    send_all(stack_settings, topic, [OutgoingMessage(key=str(i).encode(), value=f"v{i}".encode())
                                     for i in range(30)])
    group = f"bc-{uuid.uuid4().hex[:6]}"
    consumer = _consumer(stack_settings, group, topic)
    try:
        batch = _drain(consumer, 30)
        # What commit(wait=False) records, without sending it: only close() can make it
        # durable (a commit in flight can be lost with the connection at shutdown).
        consumer._committed_offset.update(next_offsets(batch))
    finally:
        consumer.close()
    ends: dict[tuple[str, int], int] = {}
    for m in batch:
        ends[(m.topic, m.partition)] = max(ends.get((m.topic, m.partition), 0), m.offset + 1)
    offsets = CommittedOffsets(stack_settings, group)
    try:
        assert offsets.committed(list(ends)) == ends
    finally:
        offsets.close()


@pytest.mark.integration
def test_what_is_queued_is_handed_over_without_waiting_for_a_full_batch(
        stack_settings: Settings) -> None:
    """With a window far longer than the test, a part batch already queued still comes back:
    the window is only a wait for the first record (librdkafka's consume(n, t) would hold
    a part batch for the whole window)."""
    topic = _fresh_topic(stack_settings, partitions=1)
    send_all(stack_settings, topic, [OutgoingMessage(key=None, value=f"v{i}".encode())
                                     for i in range(5)])
    consumer = BatchConsumer({**kafka_config(stack_settings), **consumer_settings(stack_settings)},
                             f"bc-{uuid.uuid4().hex[:6]}", [topic], batch_size=500,
                             wait_s=3600, trust_create_time=True)
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        got: list[IncomingMessage] = []
        while len(got) < 5:
            # Bounded only so that holding the part batch fails instead of hanging the suite:
            # the window is an hour, joining the group and fetching take seconds.
            got.extend(pool.submit(consumer.poll_batch).result(timeout=180))
        assert sorted(m.value for m in got) == [f"v{i}".encode() for i in range(5)]
    finally:
        pool.shutdown(wait=False)
        consumer.close()


def _unconnected(topic: str = "t") -> BatchConsumer:
    """A consumer that never polls: the gap bookkeeping is decided before any fetch."""
    return BatchConsumer({"bootstrap.servers": "127.0.0.1:9"}, "g", [topic], batch_size=10,
                         wait_s=0.01, trust_create_time=True)


def test_a_gap_is_read_again_and_taken_as_empty_only_after_it_came_back_the_same(
        caplog: pytest.LogCaptureFixture) -> None:
    consumer = _unconnected()
    tp = TP("t", 0)
    try:
        assert not consumer._skipped_over(tp, 5)  # nothing known of the partition yet
        consumer._read_offset[tp] = 5
        assert not consumer._skipped_over(tp, 6)
        assert consumer._skipped_over(tp, 9)  # 6, 7 and 8 were not handed over
        assert consumer._rereads == {tp: 6}
        assert consumer._rewinds == {}  # a re-read is a seek, never a commit
        assert "skipping 3 record(s); reading again from offset 6" in caplog.text
        for _ in range(GAP_READS - 2):
            consumer._rereads.clear()  # applied by the next poll_batch
            assert consumer._skipped_over(tp, 9)  # the same gap again: read once more
        consumer._rereads.clear()
        # Read GAP_READS times, the broker hands over 9 after 5 each time: no records lie there.
        assert not consumer._skipped_over(tp, 9)
        assert f"offsets 6 to 8 came back empty {GAP_READS} times" in caplog.text
        assert consumer._rereads == {}
        # A later gap on the same partition is read again as the first one was.
        consumer._read_offset[tp] = 20
        assert consumer._skipped_over(tp, 22)
        assert consumer._rereads == {tp: 21}
    finally:
        consumer._consumer.close()


@pytest.mark.integration
def test_records_the_broker_skipped_over_are_handed_over_before_any_later_one(
        stack_settings: Settings) -> None:
    """The embedded broker was seen to answer a fetch past a record its log holds (1 in
    ~9,000 at 600 events/s from 10 producers). Moving the fetch position past records, as
    that answer does, must not let them be committed past: they come back first."""
    topic = _fresh_topic(stack_settings, partitions=1)
    send_all(stack_settings, topic, [OutgoingMessage(key=None, value=f"v{i}".encode())
                                     for i in range(10)])
    group = f"bc-{uuid.uuid4().hex[:6]}"
    consumer = _consumer(stack_settings, group, topic)
    try:
        assert [m.offset for m in _drain(consumer, 10)] == list(range(10))
        send_all(stack_settings, topic, [OutgoingMessage(key=None, value=f"v{i}".encode())
                                         for i in range(10, 15)])
        with consumer._lock:  # what a fetch answered past offsets 10 and 11 leaves behind
            consumer._consumer.seek(TopicPartition(topic, 0, 12))
        again = _drain(consumer, 5)
        assert [m.offset for m in again] == list(range(10, 15))
        offsets = CommittedOffsets(stack_settings, group)
        # Reading again moved no committed offset: batches before the gap may be in flight.
        assert offsets.committed([(topic, 0)]) == {(topic, 0): -1001}
        assert consumer.commit(again)
        assert offsets.committed([(topic, 0)]) == {(topic, 0): 15}
        offsets.close()
    finally:
        consumer.close()


@pytest.mark.integration
def test_a_refused_commit_is_sent_again_though_no_batch_follows(stack_settings: Settings) -> None:
    """A commit refused during a rebalance used to wait for the next batch's commit; on a
    partition that then went quiet, the group's offset stayed behind what was decided, and
    enrichment and reconciliation (which wait on intake's committed offsets) waited with it."""
    topic = _fresh_topic(stack_settings, partitions=1)
    send_all(stack_settings, topic, [OutgoingMessage(key=None, value=f"v{i}".encode())
                                     for i in range(10)])
    group = f"bc-{uuid.uuid4().hex[:6]}"
    consumer = _consumer(stack_settings, group, topic)
    offsets = CommittedOffsets(stack_settings, group)
    try:
        batch = _drain(consumer, 10)
        # What the loop records for a commit sent without waiting, and then the refusal
        # librdkafka reports for it (the commit itself never reached the group).
        consumer._committed_offset.update(next_offsets(batch))
        consumer._on_commit(KafkaError(KafkaError.REBALANCE_IN_PROGRESS), [])
        assert offsets.committed([(topic, 0)]) == {(topic, 0): -1001}
        deadline = time.monotonic() + 30
        while ((offsets.committed([(topic, 0)]) != {(topic, 0): 10} or consumer._commit_failing)
               and time.monotonic() < deadline):
            assert consumer.poll_batch() == []  # nothing more to read: only the retry
        assert offsets.committed([(topic, 0)]) == {(topic, 0): 10}
        assert not consumer._commit_failing  # its success was reported back
    finally:
        offsets.close()
        consumer.close()
