"""A stage's loop on the batch consumer (streams/app.py ``BatchStage``) on the real broker:
several batches decided at once, offsets committed in the order they were read."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from agents.messages import BatchOutput, IncomingMessage
from config.settings import Settings
from streams.admin import kafka_config
from streams.app import BatchStage
from streams.batch_consumer import BatchConsumer, consumer_settings
from streams.offsets import CommittedOffsets
from streams.producer import OutgoingMessage, send_all
from streams.topics import group_id


class _Tracker:
    def batch_done(self, topic: str) -> None:
        pass


@pytest.mark.integration
def test_batches_decided_at_once_are_committed_in_the_order_read(stack_settings: Settings) -> None:
    settings = stack_settings.model_copy(update={"batch_size": 1, "app_id": f"bs-{uuid.uuid4().hex[:6]}"})
    topic = f"bs-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(kafka_config(settings))
    for future in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        future.result(15)
    send_all(settings, topic, [OutgoingMessage(key=None, value=f"v{i}".encode()) for i in range(12)])

    in_flight, most_in_flight = 0, 0
    finished: list[int] = []
    committed: list[tuple[int, bool]] = []

    async def handler(batch: list[IncomingMessage]) -> BatchOutput:
        nonlocal in_flight, most_in_flight
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        # Every third batch is slow: the two read after it finish first.
        await asyncio.sleep(0.5 if batch[0].offset % 3 == 0 else 0.01)
        in_flight -= 1
        finished.append(batch[0].offset)
        return BatchOutput()

    async def publish(output: BatchOutput) -> None:
        pass

    class RecordingStage(BatchStage):
        """Every commit the loop makes, recorded before it is sent (nothing asserted in the
        loop's threads: a failure there would end the process as the worker's would)."""

        def _open(self) -> BatchConsumer:
            consumer = super()._open()
            real_commit = consumer.commit

            def recording_commit(batch: list[IncomingMessage], **kw: Any) -> bool:
                committed.append((batch[0].offset, batch[0].offset in finished))
                return real_commit(batch, **kw)

            consumer.commit = recording_commit  # type: ignore[method-assign]
            return consumer

    async def run() -> None:
        stage = RecordingStage(settings, "ordertest", [topic], handler, publish, _Tracker(),
                               concurrency=3)
        await stage.start()
        try:
            for _ in range(1200):
                if len(committed) == 12:
                    break
                await asyncio.sleep(0.05)
        finally:
            await stage.stop()

    asyncio.run(run())
    assert sorted(finished) == list(range(12))
    assert finished != sorted(finished)  # batches did overtake each other ...
    assert most_in_flight == 3
    # ... and their offsets still moved in order, each only once its batch was decided.
    assert committed == [(offset, True) for offset in range(12)]
    offsets = CommittedOffsets(settings, group_id(settings, "ordertest"))
    try:
        assert offsets.committed([(topic, 0)]) == {(topic, 0): 12}
    finally:
        offsets.close()


@pytest.mark.integration
def test_a_stage_stopped_with_a_batch_in_hand_commits_nothing_past_it_and_leaves_its_group(
        stack_settings: Settings) -> None:
    """SIGTERM while the oldest batch waits (Postgres away, enrichment waiting on intake): a
    later batch already decided must not be committed past it, and the next member of the
    group must get the partition and every record at once."""
    settings = stack_settings.model_copy(update={
        "batch_size": 5, "db_retry_max_s": 0.5, "app_id": f"bs-{uuid.uuid4().hex[:6]}"})
    topic = f"bs-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(kafka_config(settings))
    for future in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        future.result(15)
    send_all(settings, topic, [OutgoingMessage(key=None, value=f"v{i}".encode()) for i in range(10)])
    decided: list[int] = []

    async def handler(batch: list[IncomingMessage]) -> BatchOutput:
        if batch[0].offset == 0:
            await asyncio.Event().wait()  # never decided
        decided.extend(m.offset for m in batch)
        return BatchOutput()

    async def publish(output: BatchOutput) -> None:
        pass

    async def run() -> None:
        stage = BatchStage(settings, "stoptest", [topic], handler, publish, _Tracker(), concurrency=2)
        await stage.start()
        try:
            for _ in range(1200):
                if decided:
                    break
                await asyncio.sleep(0.05)
        finally:
            await stage.stop()
        assert stage.consumer is None  # closed

    asyncio.run(run())
    assert decided and min(decided) > 0  # a later batch was decided, the first never was
    group = group_id(settings, "stoptest")
    offsets = CommittedOffsets(settings, group)
    try:
        assert offsets.committed([(topic, 0)]) == {(topic, 0): -1001}
    finally:
        offsets.close()
    successor = BatchConsumer({**kafka_config(settings), **consumer_settings(settings)}, group,
                              [topic], batch_size=100, wait_s=0.2, trust_create_time=True)
    try:
        got: list[int] = []
        deadline = time.monotonic() + 60
        while len(got) < 10 and time.monotonic() < deadline:
            got.extend(m.offset for m in successor.poll_batch())
        assert sorted(got) == list(range(10))
    finally:
        successor.close()
