"""The database's third line of defence agrees with the policy files and the tier catalog."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from access.policy import load_policy
from protection.tiers import protection_catalog
from storage.db import engine_for
from storage.protected_models import FIELD_TABLES

pytestmark = pytest.mark.integration
CATALOG = protection_catalog()
POLICIES = [load_policy("government"), load_policy("finance")]


def _rows(url: str, sql: str, **params: object) -> list[tuple]:
    with engine_for(url).connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params)]


def test_tables_have_one_column_per_protected_field_and_index(database_url: str) -> None:
    for schema in CATALOG.schemas.values():
        expected = {"event_id", "department"} | {f.name for f in schema.protected_fields} | {
            f.index_column for f in schema.indexed_fields if f.index_column}
        assert {c.name for c in FIELD_TABLES[schema.table].columns} == expected
        in_db = {r[0] for r in _rows(database_url, "SELECT column_name FROM information_schema.columns "
                                     "WHERE table_name = :t AND table_schema = current_schema()",
                                     t=schema.table)}
        assert in_db == expected


def test_column_grants_are_exactly_what_each_department_may_read(database_url: str) -> None:
    for policy in POLICIES:
        for department in policy.departments.values():
            for schema in CATALOG.schemas.values():
                granted = {r[0] for r in _rows(
                    database_url,
                    "SELECT column_name FROM information_schema.column_privileges "
                    "WHERE grantee = :g AND table_name = :t AND privilege_type = 'SELECT' "
                    "AND table_schema = current_schema()", g=department.db_role, t=schema.table)}
                protected = {f.name for f in schema.protected_fields}
                assert granted & protected == policy.granted_columns(department.name, schema.typ), (
                    department.db_role, schema.table)
                whole_table = _rows(database_url, "SELECT has_table_privilege(:g, :t, 'SELECT')",
                                    g=department.db_role, t=schema.table)[0][0]
                assert not whole_table


def test_row_level_security_follows_the_departments(database_url: str) -> None:
    expected = {(d.db_role, owner) for p in POLICIES for d in p.departments.values()
                for owner in d.rows}
    assert set(_rows(database_url, "SELECT db_role, owner FROM department_row_access")) == expected
    enabled = dict(_rows(database_url, "SELECT relname, relrowsecurity FROM pg_class "
                                       "WHERE relname = ANY(:t)", t=list(FIELD_TABLES)))
    assert enabled == dict.fromkeys(FIELD_TABLES, True)


def test_the_writer_role_may_store_but_not_read_ciphertexts(database_url: str) -> None:
    if not _rows(database_url, "SELECT 1 FROM pg_roles WHERE rolname = 'attest_app'"):
        pytest.skip("attest_app (migration 0002's writer role) does not exist on this server")
    for table in FIELD_TABLES:
        assert _rows(database_url, "SELECT has_table_privilege('attest_app', :t, 'INSERT')",
                     t=table)[0][0]
        assert not _rows(database_url, "SELECT has_table_privilege('attest_app', :t, 'SELECT')",
                         t=table)[0][0]
    assert not _rows(database_url,
                     "SELECT has_column_privilege('attest_app', 'data_keys', 'wrapped', 'SELECT')")[0][0]
