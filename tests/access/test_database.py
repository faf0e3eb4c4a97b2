"""What Postgres itself enforces for department roles (migrations 0003, 0006, 0008)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError

from scenarios.government import SOCIAL_SECURITY, TAX_BUREAU
from storage.db import engine_for
from tests.access.conftest import AccessWorld

DEPARTMENT_ROLES = ("attest_social_security", "attest_tax_bureau", "attest_treasury",
                    "attest_financial_crime")


def _as(world: AccessWorld, role: str, sql: str, **params: object) -> list[tuple]:
    with engine_for(world.url).begin() as conn:
        conn.execute(text(f"SET LOCAL ROLE {role}"))
        return [tuple(r) for r in conn.execute(text(sql), params)]


@pytest.mark.parametrize("role", DEPARTMENT_ROLES)
def test_department_roles_cannot_read_key_records(world: AccessWorld, role: str) -> None:
    assert _as(world, "attest_access_service", "SELECT count(*) FROM data_keys")[0][0] > 0
    for sql in ("SELECT subject_ref FROM data_keys LIMIT 1", "SELECT sealed FROM tier_wrapping_keys"):
        with pytest.raises(ProgrammingError, match="permission denied"):
            _as(world, role, sql)


def test_department_roles_see_only_their_departments_events(world: AccessWorld) -> None:
    ids = [d["event_id"] for d in world.docs]
    by_agency = {agency: {d["event_id"] for d in world.docs if d["agency"] == agency}
                 for agency in (TAX_BUREAU, SOCIAL_SECURITY)}
    query = "SELECT event_id::text FROM events WHERE event_id = ANY(CAST(:ids AS uuid[]))"
    assert {r[0] for r in _as(world, "attest_tax_bureau", query, ids=ids)} == by_agency[TAX_BUREAU]
    assert {r[0] for r in _as(world, "attest_social_security", query, ids=ids)} == \
        by_agency[SOCIAL_SECURITY]
    assert _as(world, "attest_treasury", query, ids=ids) == []
    with engine_for(world.url).connect() as conn:  # the owner is not affected
        assert len(conn.execute(text(query), {"ids": ids}).all()) == len(ids)


def test_the_service_role_reaches_departments_only_by_set_role(world: AccessWorld) -> None:
    with pytest.raises(ProgrammingError, match="permission denied"):
        _as(world, "attest_access_service", "SELECT income FROM document_fields LIMIT 1")
    with pytest.raises(ProgrammingError, match="permission denied"):
        _as(world, "attest_access_service", "SELECT payload FROM events LIMIT 1")
    for role in DEPARTMENT_ROLES:  # a member, without inheriting (NOINHERIT)
        member = _as(world, "attest_access_service",
                     "SELECT pg_has_role('attest_access_service', :r, 'MEMBER'), "
                     "pg_has_role('attest_access_service', :r, 'USAGE')", r=role)[0]
        assert member == (True, False), role
