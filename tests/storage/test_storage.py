"""Storage against a real Postgres (embedded, or ATTEST_DATABASE_URL when set)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from audit.log import append_records
from audit.queries import find_records
from schemas.audit import AuditRecord, audit_id_for
from security.keyfiles import generate_key
from storage import keys as registry
from storage import migrate
from storage.db import engine_for
from storage.events import StoredEvent, count_events, store_events
from tests.support.events import stored_event

pytestmark = pytest.mark.integration


def _event(event_id: str, offset: int, message: bytes = b"token") -> StoredEvent:
    return stored_event({"event_id": event_id, "amount": "10.00"}, offset=offset, kid="k1",
                        message=message)


def test_migrations_reach_head_and_are_repeatable(database_url: str) -> None:
    migrate.upgrade(database_url)  # a second run changes nothing and does not fail
    assert migrate.current_revision(database_url) == migrate.head_revision(database_url)
    with engine_for(database_url).connect() as conn:
        tables = {r[0] for r in conn.execute(text(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"))}
    assert {"events", "audit_log", "signing_keys", "alembic_version"} <= tables


def test_store_events_is_idempotent_and_detects_replays(database_url: str) -> None:
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    out = store_events(database_url, [_event(first, 1), _event(second, 2)])
    assert out.inserted == {first, second} and not out.replayed and not out.redelivered

    # The same message again (same topic/partition/offset): a redelivery, not a replay.
    again = store_events(database_url, [_event(first, 1)])
    assert again.inserted == frozenset() and again.redelivered == {first}
    assert not again.replayed

    # The same event_id from another offset: a replay; the stored row is not overwritten.
    replay = store_events(database_url, [_event(second, 99)])
    assert replay.replayed == {second}
    # Other bytes at the stored position (a recreated topic reusing offsets): still a replay.
    reused = store_events(database_url, [_event(first, 1, message=b"another token")])
    assert reused.replayed == {first} and not reused.redelivered
    assert count_events(database_url, [first, second]) == 2
    with engine_for(database_url).connect() as conn:
        offset = conn.execute(text("SELECT \"offset\" FROM events WHERE event_id = :e"),
                              {"e": second}).scalar_one()
    assert offset == 2


def test_key_registry_add_conflict_and_revoke(database_url: str) -> None:
    key = generate_key(f"src-{uuid.uuid4().hex[:6]}")
    assert registry.add_key(database_url, key.kid, key.source, key.alg, key.public_jwk)
    assert not registry.add_key(database_url, key.kid, key.source, key.alg, key.public_jwk)
    other = generate_key(key.source)
    with pytest.raises(registry.KeyConflict):
        registry.add_key(database_url, key.kid, key.source, other.alg, other.public_jwk)

    snapshot = registry.key_snapshot(database_url)
    assert snapshot[key.kid].public_jwk == key.public_jwk
    assert "d" not in snapshot[key.kid].public_jwk

    at = datetime.now(UTC)
    revoked = registry.revoke_key(database_url, key.kid, "compromised laptop", at)
    assert revoked is not None and revoked.revoked_reason == "compromised laptop"
    # Revoking again keeps the first time and reason; the row is never deleted.
    again = registry.revoke_key(database_url, key.kid, "other", at + timedelta(hours=1))
    assert again is not None and again.revoked_at == revoked.revoked_at
    assert registry.revoke_key(database_url, "no-such-kid", "x", at) is None


def test_audit_append_is_idempotent(database_url: str) -> None:
    correlation = str(uuid.uuid4())
    records = [
        AuditRecord(audit_id=audit_id_for("event.accepted", correlation), actor="test",
                    action="event.accepted", correlation_id=correlation),
        AuditRecord(audit_id=audit_id_for("event.stored", correlation), actor="test",
                    action="event.stored", correlation_id=correlation),
    ]
    assert append_records(database_url, records) == 2
    assert append_records(database_url, records) == 0
    stored = find_records(database_url, correlation_ids=[correlation])
    assert [r.action for r in stored] == ["event.accepted", "event.stored"]
