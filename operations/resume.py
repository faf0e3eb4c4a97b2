"""Replay progress on disk, so Ctrl-C (or a crash) and the same command again resume it.

One JSON file per selection under ``<state dir>/replays/<selection key>.json``, replaced
atomically after each batch whose effects are durable. It keeps the ranges the selection
resolved to when it first started, the next offset of each, and the outcome counts so far.
A finished replay removes its file: running the same command again replays it all again,
which changes nothing (every effect is idempotent) and is audited as a run of its own.
"""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field

from operations.selection import PartitionRange


class RangeProgress(BaseModel):
    partition: int
    start: int
    end: int
    next: int

    @property
    def remaining(self) -> int:
        return max(0, self.end - self.next)

    def as_range(self) -> PartitionRange:
        return PartitionRange(self.partition, self.next, self.end)


class ReplayProgress(BaseModel):
    """Where a replay stands. ``seen`` holds dead-letter identities already retried."""

    key: str
    selection: dict[str, object]
    ranges: list[RangeProgress]
    counts: dict[str, int] = Field(default_factory=dict)
    seen: list[str] = Field(default_factory=list)
    started_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    runs: int = 1

    @classmethod
    def fresh(cls, key: str, selection: dict[str, object], ranges: list[PartitionRange]) -> ReplayProgress:
        return cls(key=key, selection=selection,
                   ranges=[RangeProgress(partition=r.partition, start=r.start, end=r.end, next=r.start)
                           for r in ranges])

    @property
    def total(self) -> int:
        return sum(r.end - r.start for r in self.ranges)

    @property
    def done(self) -> int:
        return sum(r.next - r.start for r in self.ranges)

    def remaining_ranges(self) -> list[PartitionRange]:
        return [r.as_range() for r in self.ranges if r.remaining > 0]

    def advance(self, partition: int, offset: int) -> None:
        """Record that the message at ``offset`` of ``partition`` is done (and all before it)."""
        for r in self.ranges:
            if r.partition == partition and r.start <= offset < r.end:
                r.next = max(r.next, offset + 1)
                return

    def add_counts(self, counts: dict[str, int]) -> None:
        for name, n in counts.items():
            self.counts[name] = self.counts.get(name, 0) + n


def progress_path(state_dir: Path, key: str) -> Path:
    return Path(state_dir) / "replays" / f"{key}.json"


def load_progress(state_dir: Path, key: str) -> ReplayProgress | None:
    """The saved progress of this selection, or None (never started, or finished)."""
    path = progress_path(state_dir, key)
    if not path.is_file():
        return None
    return ReplayProgress.model_validate_json(path.read_text())


def save_progress(state_dir: Path, progress: ReplayProgress) -> None:
    """Write atomically: a crash mid-write leaves the previous state, never half a file."""
    path = progress_path(state_dir, progress.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".progress-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(progress.model_dump_json())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def clear_progress(state_dir: Path, key: str) -> None:
    progress_path(state_dir, key).unlink(missing_ok=True)
