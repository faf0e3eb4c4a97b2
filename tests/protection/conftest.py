"""Fixtures for field protection against the real embedded Postgres (and broker, for audits)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from config.settings import Settings
from protection.fields import FieldProtector
from protection.keyring import StaticKeyring, generate_keyring
from protection.tiers import protection_catalog
from storage import migrate
from storage.events import StoredEvent
from storage.scratch import temporary_database


@pytest.fixture(scope="module")
def keyring() -> StaticKeyring:
    """A fresh keyring per module: its blind-index keys keep modules' subjects apart."""
    return generate_keyring(protection_catalog().domains)


@pytest.fixture(scope="module")
def protector(keyring: StaticKeyring) -> FieldProtector:
    """What a worker holds: public tier keys and index keys, no private tier key."""
    return FieldProtector(keyring.restricted_to(()))


@pytest.fixture(scope="module")
def scratch_url(stack_settings: Settings) -> Iterator[str]:
    """An empty database on the embedded server, migrated to head, dropped afterwards."""
    with temporary_database(stack_settings.database_url, "attest_test") as url:
        migrate.upgrade(url)
        yield url


def stored(payloads: list[dict[str, Any]], typ: str, topic: str | None = None) -> list[StoredEvent]:
    """StoredEvents for payloads, each at its own (new) topic position."""
    topic = topic or f"test.{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    return [
        StoredEvent(event_id=str(p["event_id"]), typ=typ, source=str(p["source"]), kid="test-kid",
                    topic=topic, partition=0, offset=i, issued_at=now, received_at=now,
                    verified_at=now, payload=p)
        for i, p in enumerate(payloads)
    ]
