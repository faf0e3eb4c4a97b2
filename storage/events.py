"""The events table: idempotent batch insert keyed by event_id."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert

from storage.db import engine_for, run_db
from storage.models import EventRow


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """What the intake hands to storage for one verified event."""

    event_id: str
    typ: str
    source: str
    kid: str
    topic: str
    partition: int
    offset: int
    issued_at: datetime
    received_at: datetime
    verified_at: datetime
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    """Per event_id: newly stored, a redelivery of the stored message, or a replay."""

    inserted: frozenset[str]
    redelivered: frozenset[str]
    replayed: frozenset[str]


def store_events(url: str, events: list[StoredEvent]) -> StoreOutcome:
    """Insert in one transaction; an event_id already present is never overwritten.

    A conflicting row from the same topic/partition/offset is our own earlier delivery of
    this very message (at-least-once), not an attack; any other conflict is a replay.
    """
    if not events:
        return StoreOutcome(frozenset(), frozenset(), frozenset())

    def write() -> StoreOutcome:
        with engine_for(url).begin() as conn:
            rows = [
                {
                    "event_id": e.event_id, "typ": e.typ, "source": e.source, "kid": e.kid,
                    "topic": e.topic, "partition": e.partition, "offset": e.offset,
                    "issued_at": e.issued_at, "received_at": e.received_at,
                    "verified_at": e.verified_at, "payload": e.payload,
                }
                for e in events
            ]
            stmt = (
                insert(EventRow).values(rows)
                .on_conflict_do_nothing(index_elements=["event_id"])
                .returning(EventRow.event_id)
            )
            inserted = {str(r[0]) for r in conn.execute(stmt)}
            conflicts = [e for e in events if e.event_id not in inserted]
            redelivered: set[str] = set()
            if conflicts:
                existing = conn.execute(
                    select(EventRow.event_id, EventRow.topic, EventRow.partition, EventRow.offset)
                    .where(EventRow.event_id.in_([e.event_id for e in conflicts]))
                ).all()
                where = {str(r.event_id): (r.topic, r.partition, r.offset) for r in existing}
                redelivered = {
                    e.event_id for e in conflicts
                    if where.get(e.event_id) == (e.topic, e.partition, e.offset)
                }
        replayed = {e.event_id for e in conflicts} - redelivered
        return StoreOutcome(frozenset(inserted), frozenset(redelivered), frozenset(replayed))

    return run_db(write)


def count_events(url: str, event_ids: list[str] | None = None) -> int:
    def read() -> int:
        stmt = select(func.count()).select_from(EventRow)
        if event_ids is not None:
            stmt = stmt.where(EventRow.event_id.in_(event_ids))
        with engine_for(url).connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    return run_db(read)


def count_events_since(url: str, since: datetime) -> int:
    """Rows stored at or after ``since`` (the demo's per-run count)."""

    def read() -> int:
        stmt = select(func.count()).select_from(EventRow).where(EventRow.stored_at >= since)
        with engine_for(url).connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    return run_db(read)
