"""Migration 0007: the reconciliation tables come and go cleanly."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import text

from storage import migrate
from storage.db import engine_for
from tests.support.databases import scratch_database

pytestmark = pytest.mark.integration


def _tables(url: str) -> set[str]:
    with engine_for(url).connect() as conn:
        return {r[0] for r in conn.execute(text(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"))}


def test_reconciliation_tables_upgrade_and_downgrade(database_url):
    wanted = {"recon_matches", "recon_breaks", "recon_state"}
    with scratch_database(database_url, "recon_mig") as url:
        assert wanted <= _tables(url)
        command.downgrade(migrate.alembic_config(url), "0006")
        assert not wanted & _tables(url)
        migrate.upgrade(url)
        assert wanted <= _tables(url)
