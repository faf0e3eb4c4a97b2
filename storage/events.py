"""The events table: idempotent batch insert keyed by event_id, with field-level protection.

With a ``FieldProtector`` (what the worker passes), ``events.payload`` receives only the
event's public fields; every other field is sealed into the schema's ``*_fields`` table with
its blind indexes, and the data keys it needs are stored in the same transaction. Without
one, the payload is stored as given: that is only for tests of the table itself and for
tools that store public-only data, and it logs a warning once per process.

What tells a redelivery from a replay is stored keyed (``events.message_mac``, migration
0016): HMAC-SHA256, under the worker's message MAC key, of the SHA-256 intake computed of
the message. Intake still hands in the plain SHA-256 (``StoredEvent.message_sha256``,
``Delivery``); it is compared here and never stored.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, func, select

from protection.blind_index import MESSAGE_MAC_DOMAIN, MessageMacKey, message_mac, message_mac_key
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
    #: landed on a reused offset (a recreated topic, a restarted in-memory broker). Stored
    #: only as its MAC (``message_mac``) when a key is at hand.
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
               EventRow.message_sha256, EventRow.message_mac)
        .where(EventRow.event_id.in_(set(event_ids)))
    ).all()
    return {str(r.event_id): r for r in rows}


def protector_message_key(protector: FieldProtector) -> MessageMacKey:
    """The message MAC key of the keyring ``protector`` seals with (its index keys).

    ``FieldProtector`` has no accessor for its keyring, and intake hands storage nothing but
    the protector; tests/storage/test_message_mac.py fails if this stops finding it.
    """
    keyring = protector._keyring  # noqa: SLF001 - see the docstring
    return message_mac_key(keyring.blind_index_key(MESSAGE_MAC_DOMAIN))


def _same_message(
    row: Row[Any] | None, topic: str, partition: int, offset: int, sha256: bytes | None,
    key: MessageMacKey | None = None,
) -> bool:
    """The one rule telling our own redelivery from a replay: same position, same bytes.

    Rows since migration 0016 hold the bytes' MAC: compared when ``key`` is given, and the
    position alone decides without one (a caller that holds no key: see docs/storage.md).
    Rows from before 0016 hold the plain SHA-256, rows from before 0005 nothing.
    """
    if row is None or (row.topic, row.partition, row.offset) != (topic, partition, offset):
        return False
    if sha256 is None:
        return True
    mac = getattr(row, "message_mac", None)
    if mac is not None:
        return key is None or hmac.compare_digest(bytes(mac), message_mac(key, sha256))
    digest = None if row.message_sha256 is None else bytes(row.message_sha256)
    return digest is None or digest == sha256


_EVENT_COLUMNS = (
    ("event_id", "uuid"), ("typ", "text"), ("source", "text"), ("kid", "text"), ("topic", "text"),
    ("partition", "int"), ("offset", "bigint"), ("issued_at", "timestamptz"),
    ("received_at", "timestamptz"), ("verified_at", "timestamptz"), ("payload", "jsonb"),
    ("message_sha256", "bytea"), ("message_mac", "bytea"),
)


def _insert_events(
    conn: Connection, events: Sequence[StoredEvent], payloads: Mapping[str, dict[str, Any]],
    key: MessageMacKey | None = None,
) -> StoreOutcome:
    """Insert rows (``payloads`` by event_id); classify conflicts as redeliveries or replays.

    A conflicting row from the same topic/partition/offset with the same message bytes is
    our own earlier delivery of this very message (at-least-once), not an attack; any other
    conflict is a replay. With ``key`` only the MAC of the bytes' hash is stored; without one
    (the unprotected path: tests of the table itself) the hash is, as before migration 0016.
    """
    macs = [None if key is None or e.message_sha256 is None else message_mac(key, e.message_sha256)
            for e in events]
    hashes = [e.message_sha256 if key is None else None for e in events]
    inserted = {str(event_id) for event_id in columnar_insert(
        conn, "events", _EVENT_COLUMNS,
        [[e.event_id for e in events], [e.typ for e in events], [e.source for e in events],
         [e.kid for e in events], [e.topic for e in events], [e.partition for e in events],
         [e.offset for e in events], [e.issued_at for e in events],
         [e.received_at for e in events], [e.verified_at for e in events],
         [payloads[e.event_id] for e in events], hashes, macs],
        conflict_key="event_id", returning="event_id",
    )}
    conflicts = [e for e in events if e.event_id not in inserted]
    stored = _stored_rows(conn, [e.event_id for e in conflicts]) if conflicts else {}
    redelivered = {
        e.event_id for e in conflicts
        if _same_message(stored.get(e.event_id), e.topic, e.partition, e.offset, e.message_sha256,
                         key)
    }
    replayed = {e.event_id for e in conflicts} - redelivered
    return StoreOutcome(frozenset(inserted), frozenset(redelivered), frozenset(replayed))


def store_events(
    url: str, events: list[StoredEvent], *, protector: FieldProtector | None = None,
    message_key: MessageMacKey | None = None,
) -> StoreOutcome:
    """Insert in one transaction; an event_id already present is never overwritten.

    With ``protector``, protected fields are encrypted and only public fields reach
    ``events.payload``; the data keys and wrapping keys the batch minted are stored in the
    same transaction, so a committed ciphertext always has its key beside it.
    ``message_key`` keys ``events.message_mac``; by default it is the protector's.
    """
    if not events:
        return StoreOutcome(frozenset(), frozenset(), frozenset())
    if protector is None:
        return run_db(lambda: _store_unprotected(url, events, message_key))
    key = message_key or protector_message_key(protector)
    return run_db(lambda: _store_protected(url, events, protector, key))


def _store_unprotected(url: str, events: list[StoredEvent],
                       key: MessageMacKey | None) -> StoreOutcome:
    global _warned_unprotected
    if not _warned_unprotected:
        _warned_unprotected = True
        log.warning("storing events without field protection: payloads are kept in clear")
    with engine_for(url).begin() as conn:
        return _insert_events(conn, events, {e.event_id: e.payload for e in events}, key)


def _store_protected(url: str, events: list[StoredEvent], protector: FieldProtector,
                     key: MessageMacKey) -> StoreOutcome:
    with engine_for(url).begin() as conn:
        # Shared lock: `attest forget` cannot destroy keys while this batch is being stored,
        # and a forget that committed before it moves the epoch, so stale keys are dropped.
        batch = protector.seal_batch(events, protected.shredding_epoch(conn))
        protected.insert_key_records(conn, batch.wrapping_keys, batch.data_keys)
        outcome = _insert_events(conn, events, {s.event_id: s.public_payload for s in batch.events},
                                 key)
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


def already_stored(
    url: str, deliveries: list[Delivery], *, message_key: MessageMacKey | None = None
) -> set[Delivery]:
    """The deliveries whose event was stored from exactly that message: a redelivery,
    whatever a check against today's clock or keys would say.

    ``message_key`` checks the bytes of rows stored with a MAC; without it their position
    alone is compared (see ``_same_message``).
    """
    if not deliveries:
        return set()

    def read() -> set[Delivery]:
        with engine_for(url).connect() as conn:
            stored = _stored_rows(conn, (d[0] for d in deliveries))
        return {d for d in deliveries
                if _same_message(stored.get(d[0]), *d[1:], key=message_key)}

    return run_db(read)
