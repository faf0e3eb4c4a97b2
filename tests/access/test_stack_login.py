"""`attest dev up` gives the access service a login of its own, with exactly the group's grants."""

from __future__ import annotations

import json
import os

import pytest
from sqlalchemy import create_engine, pool, text
from sqlalchemy.exc import ProgrammingError

from config.settings import STACK_FILE, Settings, _with_dev_stack
from devstack.stack import read_stack
from storage.db import normalise_url


@pytest.fixture(scope="module")
def access_url(stack_settings: Settings) -> str:
    if os.environ.get("ATTEST_DATABASE_URL"):
        pytest.skip("the session runs against an external Postgres, not the embedded one")
    info = read_stack(stack_settings)
    assert info is not None and info.access_database_url
    return info.access_database_url


def _engine(url: str):  # noqa: ANN202 - a throwaway engine
    return create_engine(normalise_url(url), poolclass=pool.NullPool)


def test_the_login_and_its_password_are_kept_private(stack_settings: Settings, access_url: str) -> None:
    assert (stack_settings.state_dir / STACK_FILE).stat().st_mode & 0o777 == 0o600
    password_file = stack_settings.state_dir / "postgres-access.password"
    assert password_file.stat().st_mode & 0o777 == 0o600
    assert password_file.read_text().strip() in access_url
    recorded = json.loads((stack_settings.state_dir / STACK_FILE).read_text())
    assert recorded["access_database_url"] == access_url


def test_the_login_only_has_the_access_service_grants(access_url: str) -> None:
    engine = _engine(access_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT current_user")).scalar() == "attest_access"
            conn.execute(text("SELECT count(*) FROM access_requests")).scalar()
            conn.execute(text("SELECT count(*) FROM data_keys")).scalar()
        for statement in ("UPDATE audit_log SET actor = actor", "SELECT income FROM document_fields",
                          "SELECT payload FROM events", "SET ROLE postgres",
                          "INSERT INTO data_keys (id, tier, subject_domain) "
                          "VALUES (gen_random_uuid(), 'restricted', 'x')"):
            with pytest.raises(ProgrammingError), engine.begin() as conn:
                conn.execute(text(statement))
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL ROLE attest_tax_bureau"))
            assert conn.execute(text("SELECT current_user")).scalar() == "attest_tax_bureau"
    finally:
        engine.dispose()


def test_settings_take_the_login_only_with_the_embedded_database(stack_settings: Settings,
                                                                 access_url: str) -> None:
    base = Settings(state_dir=stack_settings.state_dir)
    assert _with_dev_stack(base).access_database_url == access_url
    elsewhere = Settings(state_dir=stack_settings.state_dir,
                         database_url="postgresql://x@db.example/attest")
    assert _with_dev_stack(elsewhere).access_database_url is None
