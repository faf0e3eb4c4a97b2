"""Fixtures for field protection against the real embedded Postgres (and broker, for audits)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from config.settings import Settings
from protection.fields import FieldProtector
from protection.keyring import StaticKeyring, generate_keyring
from protection.tiers import protection_catalog
from tests.support.databases import scratch_database

# Where tests/protection/test_storage_protection.py still imports the event factory from.
from tests.support.events import stored_events as stored  # noqa: F401


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
    with scratch_database(stack_settings.database_url, "attest_test") as url:
        yield url
