"""Fixtures for the audit trail: a fresh database per test, records, a tamperer.

Tampering tests need a chain of their own (the session database is shared by every test),
so each gets a new database on the same server (embedded Postgres 18, or the server of
ATTEST_DATABASE_URL), migrated by the real Alembic path, and dropped afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from audit.checkpoints import CheckpointSigner
from schemas.audit import AuditRecord, audit_id_for
from security.keyfiles import generate_key
from storage.db import engine_for
from tests.support.databases import scratch_database

FreshDb = Callable[..., str]


@pytest.fixture
def new_database(database_url: str) -> Iterator[FreshDb]:
    """A factory of empty databases on the test server, migrated to ``revision``."""
    with ExitStack() as made:
        yield lambda revision="head": made.enter_context(
            scratch_database(database_url, "attest_audit", revision))


@pytest.fixture
def chain_db(new_database: FreshDb) -> str:
    """One fresh, migrated, empty database."""
    return new_database()


@pytest.fixture
def signer() -> CheckpointSigner:
    return CheckpointSigner(generate_key("attest-audit"))


def make_records(n: int, start: int = 0, actor: str = "worker:test:1") -> list[AuditRecord]:
    """``n`` realistic decisions: accepted/stored pairs about distinct events."""
    base = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    out = []
    for i in range(start, start + n):
        event = str(uuid.UUID(int=i + 1))
        action = ("event.accepted", "event.stored", "event.rejected")[i % 3]
        out.append(AuditRecord(
            audit_id=audit_id_for(action, event, i), time=base + timedelta(seconds=i),
            actor=actor, action=action,
            outcome="rejected" if action == "event.rejected" else "ok",
            reason="bad_signature" if action == "event.rejected" else None,
            correlation_id=event, subject_ids=[event, f"acct-{i % 7}"],
            source_topic="attest.transactions", source_partition=i % 4, source_offset=i,
            detail={"kid": "core-ledger-1", "amount": 10.5 + i, "n": i},
        ))
    return out


def tamper(url: str, *statements: str, params: dict[str, Any] | None = None) -> None:
    """Run SQL as the superuser with the append-only triggers disabled: an attacker."""
    with engine_for(url).begin() as conn:
        conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
        conn.execute(text(
            "ALTER TABLE audit_checkpoints DISABLE TRIGGER audit_checkpoints_append_only"))
        for statement in statements:
            conn.execute(text(statement), params or {})
        conn.execute(text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only"))
        conn.execute(text(
            "ALTER TABLE audit_checkpoints ENABLE TRIGGER audit_checkpoints_append_only"))
