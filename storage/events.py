"""The events table: idempotent batch insert keyed by event_id, with field-level protection.

With a ``FieldProtector`` (what the worker passes), ``events.payload`` receives only the
event's public fields; every other field is sealed into the schema's ``*_fields`` table with
its blind indexes, and the data keys it needs are stored in the same transaction. Without
one, the payload is stored as given: that is only for tests of the table itself and for
tools that store public-only data, and it logs a warning once per process.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, func, select

from protection.fields import FieldProtector
from storage import protected
from storage.columnar import columnar_insert
from storage.db import engine_for, run_db
from storage.models import EventRow

log = logging.getLogger("attest.storage")

_warned_unprotected = False


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
    #: SHA-256 of the Kafka message bytes: tells our own redelivery from a replay that
    #: landed on a reused offset (a recreated topic, a restarted in-memory broker).
    message_sha256: bytes | None = None


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    """Per event_id: newly stored, a redelivery of the stored message, or a replay."""

    inserted: frozenset[str]
    redelivered: frozenset[str]
    replayed: frozenset[str]


def _stored_rows(conn: Connection, event_ids: Iterable[str]) -> dict[str, Row[Any]]:
    """Where and from which bytes each of these events was stored."""
    rows = conn.execute(
        select(EventRow.event_id, EventRow.topic, EventRow.partition, EventRow.offset,
               EventRow.message_sha256)
        .where(EventRow.event_id.in_(set(event_ids)))
    ).all()
    return {str(r.event_id): r for r in rows}


def _same_message(
    row: Row[Any] | None, topic: str, partition: int, offset: int, sha256: bytes | None
) -> bool:
    """The one rule telling our own redelivery from a replay: same position, same bytes."""
    if row is None or (row.topic, row.partition, row.offset) != (topic, partition, offset):
        return False
    # Rows from before migration 0005 carry no hash: the position alone decides.
    digest = None if row.message_sha256 is None else bytes(row.message_sha256)
    return digest is None or sha256 is None or digest == sha256


_EVENT_COLUMNS = (
    ("event_id", "uuid"), ("typ", "text"), ("source", "text"), ("kid", "text"), ("topic", "text"),
    ("partition", "int"), ("offset", "bigint"), ("issued_at", "timestamptz"),
    ("received_at", "timestamptz"), ("verified_at", "timestamptz"), ("payload", "jsonb"),
    ("message_sha256", "bytea"),
)


def _insert_events(
    conn: Connection, events: Sequence[StoredEvent], payloads: Mapping[str, dict[str, Any]]
) -> StoreOutcome:
    """Insert rows (``payloads`` by event_id); classify conflicts as redeliveries or replays.

    A conflicting row from the same topic/partition/offset with the same message bytes is
    our own earlier delivery of this very message (at-least-once), not an attack; any other
    conflict is a replay.
    """
    inserted = {str(event_id) for event_id in columnar_insert(
        conn, "events", _EVENT_COLUMNS,
        [[e.event_id for e in events], [e.typ for e in events], [e.source for e in events],
         [e.kid for e in events], [e.topic for e in events], [e.partition for e in events],
         [e.offset for e in events], [e.issued_at for e in events],
         [e.received_at for e in events], [e.verified_at for e in events],
         [payloads[e.event_id] for e in events], [e.message_sha256 for e in events]],
        conflict_key="event_id", returning="event_id",
    )}
    conflicts = [e for e in events if e.event_id not in inserted]
    stored = _stored_rows(conn, [e.event_id for e in conflicts]) if conflicts else {}
    redelivered = {
        e.event_id for e in conflicts
        if _same_message(stored.get(e.event_id), e.topic, e.partition, e.offset, e.message_sha256)
    }
    replayed = {e.event_id for e in conflicts} - redelivered
    return StoreOutcome(frozenset(inserted), frozenset(redelivered), frozenset(replayed))


def store_events(
    url: str, events: list[StoredEvent], *, protector: FieldProtector | None = None
) -> StoreOutcome:
    """Insert in one transaction; an event_id already present is never overwritten.

    With ``protector``, protected fields are encrypted and only public fields reach
    ``events.payload``; the data keys and wrapping keys the batch minted are stored in the
    same transaction, so a committed ciphertext always has its key beside it.
    """
    if not events:
        return StoreOutcome(frozenset(), frozenset(), frozenset())
    if protector is None:
        return run_db(lambda: _store_unprotected(url, events))
    return run_db(lambda: _store_protected(url, events, protector))


def _store_unprotected(url: str, events: list[StoredEvent]) -> StoreOutcome:
    global _warned_unprotected
    if not _warned_unprotected:
        _warned_unprotected = True
        log.warning("storing events without field protection: payloads are kept in clear")
    with engine_for(url).begin() as conn:
        return _insert_events(conn, events, {e.event_id: e.payload for e in events})


def _store_protected(url: str, events: list[StoredEvent], protector: FieldProtector) -> StoreOutcome:
    with engine_for(url).begin() as conn:
        # Shared lock: `attest forget` cannot destroy keys while this batch is being stored,
        # and a forget that committed before it moves the epoch, so stale keys are dropped.
        batch = protector.seal_batch(events, protected.shredding_epoch(conn))
        protected.insert_key_records(conn, batch.wrapping_keys, batch.data_keys)
        outcome = _insert_events(conn, events, {s.event_id: s.public_payload for s in batch.events})
        protected.insert_sealed_events(
            conn, [s for s in batch.events if s.event_id in outcome.inserted])
    protector.confirm_stored(batch)
    return outcome


def count_events(
    url: str, event_ids: list[str] | None = None, *, since: datetime | None = None
) -> int:
    """Stored events, optionally only these ids and/or those stored at or after ``since``."""

    def read() -> int:
        stmt = select(func.count()).select_from(EventRow)
        if event_ids is not None:
            stmt = stmt.where(EventRow.event_id.in_(event_ids))
        if since is not None:
            stmt = stmt.where(EventRow.stored_at >= since)
        with engine_for(url).connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    return run_db(read)


#: (event_id, topic, partition, offset, sha256 of the message bytes)
Delivery = tuple[str, str, int, int, bytes]


def already_stored(url: str, deliveries: list[Delivery]) -> set[Delivery]:
    """The deliveries whose event was stored from exactly that message: a redelivery,
    whatever a check against today's clock or keys would say."""
    if not deliveries:
        return set()

    def read() -> set[Delivery]:
        with engine_for(url).connect() as conn:
            stored = _stored_rows(conn, (d[0] for d in deliveries))
        return {d for d in deliveries if _same_message(stored.get(d[0]), *d[1:])}

    return run_db(read)
