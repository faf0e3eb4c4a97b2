"""Which consumer positions say that a partition's log started again, and what the guard does."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime
from typing import NamedTuple

from agents.messages import IncomingMessage
from streams.log_reset import LogResetGuard, log_restarted


def test_positions_inside_the_log_are_healthy() -> None:
    assert not log_restarted(last_read=None, committed=None, end=0)
    assert not log_restarted(last_read=9, committed=10, end=10)  # read to the very end
    assert not log_restarted(last_read=4, committed=3, end=10)
    assert not log_restarted(last_read=None, committed=10, end=10)


def test_a_position_past_the_end_means_the_log_started_again() -> None:
    # The broker-restart fault: the stage had read to 130 of the old log, the new one holds 80.
    assert log_restarted(last_read=130, committed=None, end=80)
    assert log_restarted(last_read=80, committed=None, end=80)  # offset 80 was never written
    # An acknowledgement from the old log committed 131 into the new broker's group.
    assert log_restarted(last_read=None, committed=131, end=80)
    assert log_restarted(last_read=None, committed=1, end=0)


# --- the guard, on a stand-in for Faust's consumer and the broker probe -----------------


class TP(NamedTuple):
    topic: str
    partition: int


class FakeConsumer:
    def __init__(self, read: dict[TP, int]) -> None:
        self._read_offset = dict(read)
        self._committed_offset = {tp: offset + 1 for tp, offset in read.items()}
        self.sought: list[tuple[TP, int]] = []

    def assignment(self) -> set[TP]:
        return set(self._read_offset) | set(self._committed_offset)

    async def seek(self, tp: TP, offset: int) -> None:
        self.sought.append((tp, offset))


class FakeApp:
    def __init__(self, consumer: FakeConsumer) -> None:
        self.consumer = consumer


class FakeLog:
    """What the broker holds: (low, end) and the bytes at each offset of one partition."""

    def __init__(self, values: dict[int, bytes], low: int = 0) -> None:
        self.values, self.low = values, low

    def span(self, topic: str, partition: int) -> tuple[int, int]:
        return self.low, max(self.values, default=-1) + 1

    def holds(self, topic: str, partition: int, offset: int, sha256: bytes) -> bool | None:
        value = self.values.get(offset)
        return value is not None and hashlib.sha256(value).digest() == sha256


def _message(offset: int, value: bytes) -> IncomingMessage:
    return IncomingMessage("t", 0, offset, None, value, datetime.now(UTC))


def test_a_new_log_grown_past_the_old_position_is_read_again() -> None:
    tp = TP("t", 0)
    consumer = FakeConsumer({tp: 20})
    guard = LogResetGuard(FakeApp(consumer), FakeLog({i: f"new-{i}".encode() for i in range(40)}))
    guard.saw([_message(19, b"old-19"), _message(20, b"old-20")])
    assert asyncio.run(guard.check()) == [("t", 0)]
    assert consumer.sought == [(tp, 0)]
    assert tp not in consumer._read_offset and tp not in consumer._committed_offset


def test_the_same_log_grown_further_is_left_alone() -> None:
    tp = TP("t", 0)
    consumer = FakeConsumer({tp: 20})
    guard = LogResetGuard(FakeApp(consumer), FakeLog({i: f"old-{i}".encode() for i in range(40)}))
    guard.saw([_message(20, b"old-20")])
    assert asyncio.run(guard.check()) == []
    assert consumer.sought == []


def test_a_message_removed_by_retention_is_no_restart() -> None:
    tp = TP("t", 0)
    consumer = FakeConsumer({tp: 20})
    log = FakeLog({i: f"old-{i}".encode() for i in range(30, 40)}, low=30)
    guard = LogResetGuard(FakeApp(consumer), log)
    guard.saw([_message(20, b"old-20")])
    assert asyncio.run(guard.check()) == []


def test_a_position_past_the_new_end_is_read_again_without_a_fingerprint() -> None:
    tp = TP("t", 0)
    consumer = FakeConsumer({tp: 20})
    guard = LogResetGuard(FakeApp(consumer), FakeLog({i: b"x" for i in range(5)}))
    assert asyncio.run(guard.check()) == [("t", 0)]
    assert consumer.sought == [(tp, 0)]


def test_a_consumer_that_went_on_in_the_new_log_is_caught_by_its_anchor() -> None:
    # The CI failure: enrichment had read the old log to offset 5; the new log grew to 20 and
    # the stage went on from offset 6 in it before the check ran, so the last message it saw is
    # one the new log does hold. The first message it saw (the anchor) is not.
    tp = TP("t", 0)
    consumer = FakeConsumer({tp: 19})
    new_log = {i: f"new-{i}".encode() for i in range(20)}
    guard = LogResetGuard(FakeApp(consumer), FakeLog(new_log))
    guard.saw([_message(4, b"old-4"), _message(5, b"old-5")])
    guard.saw([_message(i, new_log[i]) for i in range(6, 20)])
    assert asyncio.run(guard.check()) == [("t", 0)]
    assert consumer.sought == [(tp, 0)]
    # Read again from the start, the new log anchors the partition; the guard is then quiet.
    consumer._read_offset[tp] = 19
    guard.saw([_message(i, new_log[i]) for i in range(20)])
    assert asyncio.run(guard.check()) == []
    assert consumer.sought == [(tp, 0)]


def test_an_anchor_removed_by_retention_moves_to_the_last_message_seen() -> None:
    tp = TP("t", 0)
    consumer = FakeConsumer({tp: 39})
    log = FakeLog({i: f"old-{i}".encode() for i in range(30, 40)}, low=30)
    guard = LogResetGuard(FakeApp(consumer), log)
    guard.saw([_message(10, b"old-10")])
    guard.saw([_message(39, b"old-39")])
    assert asyncio.run(guard.check()) == []
    assert guard._anchor[("t", 0)] == guard._last_seen[("t", 0)]


def test_a_revoked_partition_is_forgotten() -> None:
    # A later owner may read the partition from elsewhere; an anchor kept from this owner's
    # time would make a rejoin that reads it from 0 look like a new log.
    tp = TP("t", 0)
    consumer = FakeConsumer({tp: 5})
    guard = LogResetGuard(FakeApp(consumer), FakeLog({i: b"x" for i in range(10)}))
    guard.saw([_message(5, b"x")])
    del consumer._read_offset[tp], consumer._committed_offset[tp]
    assert asyncio.run(guard.check()) == []
    assert guard._anchor == {} and guard._last_seen == {}
