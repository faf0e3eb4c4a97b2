"""What a replay reads: the operator's selection, and the offset ranges it resolves to.

A selection is what the operator typed; ranges are what it meant on the broker when the
replay first started. Resume state is keyed by a hash of the selection and keeps the ranges,
so the same command resumes exactly the messages it began with, even if the topic grew.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime

from operations.errors import OffsetOutOfRange, SelectionError, UnknownTopic

#: Logical topics a replay may read (the topic suffixes in streams/topics.py).
REPLAYABLE = ("transactions", "documents", "approvals", "dead-letter")


@dataclass(frozen=True)
class Selection:
    """The messages an operator asked to replay. ``to_offset`` is inclusive, like the CLI."""

    topic: str
    partition: int | None = None
    from_offset: int | None = None
    to_offset: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    event_ids: tuple[str, ...] = ()
    #: Dead-letter filters: only letters with one of these reasons / from this source.
    reasons: tuple[str, ...] = ()
    source: str | None = None
    model_dir: str | None = None
    dry_run: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.topic not in REPLAYABLE:
            raise UnknownTopic(f"unknown topic {self.topic!r}; choose one of {', '.join(REPLAYABLE)}")
        by_offset = self.from_offset is not None or self.to_offset is not None
        by_time = self.since is not None or self.until is not None
        if self.event_ids and (by_offset or by_time or self.partition is not None):
            raise SelectionError("--event-id selects by itself; drop the offset, partition and time options")
        if by_offset and by_time:
            raise SelectionError("select by offsets or by time, not both")
        if by_offset and self.partition is None:
            raise SelectionError("--from-offset/--to-offset need --partition")
        if self.from_offset is not None and self.from_offset < 0:
            raise OffsetOutOfRange(f"--from-offset {self.from_offset} is negative")
        if (self.from_offset is not None and self.to_offset is not None
                and self.to_offset < self.from_offset):
            raise OffsetOutOfRange(
                f"--to-offset {self.to_offset} is before --from-offset {self.from_offset}")
        if self.since and self.until and self.until < self.since:
            raise SelectionError("--until is before --since")
        if self.event_ids and self.topic == "dead-letter":
            raise SelectionError("--event-id finds stored events; dead letters were never stored")

    def describe(self) -> dict[str, object]:
        """The selection as plain JSON values (audit detail, resume state, key)."""
        out: dict[str, object] = {}
        for name, value in asdict(self).items():
            if name in ("dry_run", "extra") or value in (None, (), [], {}):
                continue
            out[name] = value.isoformat() if isinstance(value, datetime) else (
                list(value) if isinstance(value, tuple) else value)
        return out

    def key(self, topic_name: str = "") -> str:
        """Same selection of the same topic (full name), same key: where a resumed run
        finds its progress.

        Times count as the operator typed them (``extra["since"]``, ``extra["until"]``) when
        given: ``--since 2h`` means another instant a minute later, and the same command
        must still find its progress (which keeps the instants the first run resolved).
        """
        described = self.describe()
        described.update({name: f"as typed: {text}" for name, text in self.extra.items()
                          if name in ("since", "until")})
        encoded = json.dumps([topic_name, described], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(encoded.encode()).hexdigest()[:20]


@dataclass(frozen=True, order=True)
class PartitionRange:
    """Offsets ``start`` (inclusive) to ``end`` (exclusive) of one partition."""

    partition: int
    start: int
    end: int

    @property
    def size(self) -> int:
        return max(0, self.end - self.start)


def offset_ranges(
    selection: Selection, watermarks: dict[int, tuple[int, int]],
    time_bounds: dict[int, tuple[int, int]] | None = None,
) -> list[PartitionRange]:
    """The ranges a partition/offset or time selection covers, checked against the log.

    ``watermarks`` maps each partition to (low, high) as the broker reports them now;
    ``time_bounds``, for a time selection, maps partitions to offsets the times resolved to.
    Raises ``OffsetOutOfRange`` for a partition or offset the topic does not have.
    """
    if selection.partition is not None and selection.partition not in watermarks:
        raise OffsetOutOfRange(
            f"partition {selection.partition} does not exist (the topic has {len(watermarks)})")
    partitions = [selection.partition] if selection.partition is not None else sorted(watermarks)
    ranges = []
    for p in partitions:
        low, high = watermarks[p]
        start, end = low, high
        if selection.from_offset is not None or selection.to_offset is not None:
            if high <= low:
                raise OffsetOutOfRange(f"partition {p} holds no messages")
        if selection.from_offset is not None:
            if not low <= selection.from_offset < high:
                raise OffsetOutOfRange(
                    f"--from-offset {selection.from_offset} is outside partition {p}'s "
                    f"offsets {low}..{high - 1}")
            start = selection.from_offset
        if selection.to_offset is not None:
            if selection.to_offset < low:
                raise OffsetOutOfRange(
                    f"--to-offset {selection.to_offset} is before partition {p}'s first offset {low}")
            if selection.to_offset >= high:
                raise OffsetOutOfRange(
                    f"--to-offset {selection.to_offset} is past partition {p}'s last offset {high - 1}")
            end = selection.to_offset + 1
        if time_bounds is not None:
            start, end = time_bounds.get(p, (high, high))
        if end > start:
            ranges.append(PartitionRange(p, start, end))
    return ranges


def event_ranges(positions: list[tuple[int, int]]) -> list[PartitionRange]:
    """One single-offset range per stored position (partition, offset), sorted, distinct."""
    return [PartitionRange(p, o, o + 1) for p, o in sorted(set(positions))]
