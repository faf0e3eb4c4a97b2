"""Selections, time parsing and time-to-offset search: pure, no broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from operations.errors import BadTime, ExitCode, OffsetOutOfRange, SelectionError, UnknownTopic
from operations.selection import PartitionRange, Selection, event_ranges, offset_ranges
from operations.time_offsets import first_offset_at_or_after
from operations.times import parse_time

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
WATERMARKS = {0: (0, 10), 1: (5, 8)}


def test_whole_topic_covers_every_partition_from_low_to_high() -> None:
    assert offset_ranges(Selection("transactions"), WATERMARKS) == [
        PartitionRange(0, 0, 10), PartitionRange(1, 5, 8)]


def test_offsets_are_inclusive_and_checked_against_the_log() -> None:
    sel = Selection("transactions", partition=1, from_offset=5, to_offset=6)
    assert offset_ranges(sel, WATERMARKS) == [PartitionRange(1, 5, 7)]
    with pytest.raises(OffsetOutOfRange):
        offset_ranges(Selection("transactions", partition=1, from_offset=2), WATERMARKS)
    with pytest.raises(OffsetOutOfRange):
        offset_ranges(Selection("transactions", partition=0, to_offset=10), WATERMARKS)
    with pytest.raises(OffsetOutOfRange):
        offset_ranges(Selection("transactions", partition=7), WATERMARKS)


def test_time_bounds_replace_the_log_range() -> None:
    ranges = offset_ranges(Selection("documents", since=NOW), WATERMARKS, {0: (4, 9), 1: (8, 8)})
    assert ranges == [PartitionRange(0, 4, 9)]


@pytest.mark.parametrize("kwargs, error", [
    ({"topic": "nope"}, UnknownTopic),
    ({"topic": "transactions", "from_offset": 3}, SelectionError),
    ({"topic": "transactions", "partition": 0, "from_offset": 3, "since": NOW}, SelectionError),
    ({"topic": "transactions", "event_ids": ("x",), "partition": 0}, SelectionError),
    ({"topic": "transactions", "partition": 0, "from_offset": 5, "to_offset": 4}, OffsetOutOfRange),
    ({"topic": "dead-letter", "event_ids": ("x",)}, SelectionError),
])
def test_contradictory_options_are_refused(kwargs: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        Selection(**kwargs)


def test_selection_key_is_stable_and_ignores_dry_run() -> None:
    a = Selection("transactions", partition=0, from_offset=1, to_offset=5)
    assert a.key() == Selection("transactions", partition=0, from_offset=1, to_offset=5,
                                dry_run=True).key()
    assert a.key() != Selection("transactions", partition=0, from_offset=1, to_offset=6).key()


def test_event_ranges_are_single_offsets_sorted_and_distinct() -> None:
    assert event_ranges([(1, 4), (0, 9), (1, 4)]) == [PartitionRange(0, 9, 10), PartitionRange(1, 4, 5)]


def test_times_absolute_relative_and_bad() -> None:
    assert parse_time("2026-12-01T09:30:00Z", NOW) == datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    assert parse_time("2026-11-30", NOW) == datetime(2026, 11, 30, tzinfo=UTC)
    assert parse_time("90m", NOW) == NOW - timedelta(minutes=90)
    assert parse_time("2d", NOW) == NOW - timedelta(days=2)
    for bad in ("yesterday", "12 parsecs", "2027-01-01T00:00:00Z"):
        with pytest.raises(BadTime) as caught:
            parse_time(bad, NOW)
        assert caught.value.exit_code == ExitCode.BAD_TIME


@pytest.mark.parametrize("target, expected", [(0, 0), (100, 0), (150, 1), (300, 2), (301, 5), (999, 5)])
def test_first_offset_at_or_after(target: int, expected: int) -> None:
    stamps = [100, 200, 300, 300, 300]
    probes: list[int] = []

    def at(offset: int) -> int:
        probes.append(offset)
        return stamps[offset]

    assert first_offset_at_or_after(at, 0, len(stamps), target) == expected
    assert len(probes) <= 3  # log2(5) rounded up: a search, not a scan


def test_exit_codes_are_distinct() -> None:
    codes = [ExitCode.UNKNOWN_TOPIC, ExitCode.OFFSET_OUT_OF_RANGE, ExitCode.BAD_TIME,
             ExitCode.BROKER_UNREACHABLE, ExitCode.DATABASE_UNREACHABLE]
    assert len(set(codes)) == len(codes) and 0 not in codes and 1 not in codes


def test_a_relative_time_keeps_its_key_as_typed() -> None:
    a = Selection("dead-letter", since=NOW - timedelta(hours=2), extra={"since": "2h"})
    b = Selection("dead-letter", since=NOW - timedelta(hours=1, minutes=59), extra={"since": "2h"})
    assert a.key("t") == b.key("t")
    assert a.key("t") != Selection("dead-letter", since=NOW, extra={"since": "3h"}).key("t")
