"""The database enforces least privilege on its own (issue 11, item 5).

The session stack is initialised the default way (scram-sha-256): every login needs its
generated password. The worker login (``attest_worker``) holds exactly the writer role's
grants, listed here on purpose: a new grant has to be added to this list by someone who
meant it. It reads no plaintext field, no wrapped key, no ``subject_ref``, and cannot change
the audit log. The access login (``attest_access``) reaches nothing but its service role and,
by ``SET ROLE``, the department roles; those read neither ``data_keys.subject_ref`` nor
another department's rows.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import psycopg2
import pytest
from sqlalchemy import Engine, create_engine, pool, text
from sqlalchemy.exc import DBAPIError

from config.settings import Settings
from devstack.postgres import ACCESS_LOGIN, SUPERUSER, WORKER_LOGIN
from devstack.stack import StackInfo, read_stack
from storage.db import normalise_url
from storage.protected_models import FIELD_TABLES

pytestmark = pytest.mark.integration

#: Everything the writer role may do, table by table (migrations 0002, 0003, 0007, 0009, 0014, 0016).
#: Whole-table privileges; column-level ones are in WORKER_COLUMN_GRANTS.
WORKER_TABLE_GRANTS = {
    ("alembic_version", "SELECT"),  # the schema check at start
    ("signing_keys", "SELECT"),  # the key registry
    ("events", "SELECT"), ("events", "INSERT"),  # public fields only; the redelivery check
    ("audit_log", "SELECT"), ("audit_log", "INSERT"),  # append to the chain, read its head
    ("audit_checkpoints", "SELECT"), ("audit_checkpoints", "INSERT"),
    ("audit_signers", "SELECT"),  # the sink verifies audit messages; registering is the owner's
    ("tier_wrapping_keys", "INSERT"), ("data_keys", "INSERT"),
    ("data_key_shredding", "SELECT"),
    ("inferences", "INSERT"),  # sealed labels in; only the key columns out (below)
    ("recon_matches", "SELECT"), ("recon_matches", "INSERT"),
    ("recon_breaks", "SELECT"), ("recon_breaks", "INSERT"),
    ("recon_state", "SELECT"), ("recon_state", "INSERT"), ("recon_state", "UPDATE"),
    *((table, "INSERT") for table in FIELD_TABLES),  # ciphertexts in, never out
}
WORKER_COLUMN_GRANTS = {
    ("data_keys", "id", "SELECT"),  # INSERT ... ON CONFLICT (id) reads the conflict column
    ("tier_wrapping_keys", "id", "SELECT"),
    ("data_key_shredding", "epoch", "UPDATE"),
    # Migration 0016: ON CONFLICT and replay's "already classified?" read the key columns;
    # the sealed label and score are never read back by a worker.
    ("inferences", "event_id", "SELECT"), ("inferences", "task", "SELECT"),
    ("inferences", "model_version", "SELECT"),
}


@pytest.fixture(scope="module")
def recorded(stack_settings: Settings) -> StackInfo:
    if os.environ.get("ATTEST_DATABASE_URL"):
        pytest.skip("the session runs against an external Postgres, not the embedded one")
    info = read_stack(stack_settings)
    assert info is not None and info.worker_database_url and info.access_database_url
    return info


def _engine(url: str) -> Engine:
    return create_engine(normalise_url(url), poolclass=pool.NullPool)


@pytest.fixture(scope="module")
def owner(recorded: StackInfo) -> Iterator[Engine]:
    engine = _engine(recorded.database_url)
    yield engine
    engine.dispose()


def _rows(engine: Engine, sql: str, **params: object) -> set[tuple]:
    with engine.connect() as conn:
        return {tuple(row) for row in conn.execute(text(sql), params)}


def _refused(url: str, statement: str) -> None:
    engine = _engine(url)
    try:
        with pytest.raises(DBAPIError) as caught, engine.begin() as conn:
            conn.execute(text(statement))
        assert "permission denied" in str(caught.value.orig), statement
    finally:
        engine.dispose()


# -- authentication -----------------------------------------------------------------------


def test_every_login_needs_its_password(recorded: StackInfo, owner: Engine) -> None:
    assert _rows(owner, "SELECT DISTINCT auth_method FROM pg_hba_file_rules") == {("scram-sha-256",)}
    url = urlsplit(recorded.database_url)
    assert url.password is None  # the recorded (and printed) URL names the file instead
    passfile = parse_qs(url.query)["passfile"][0]
    assert os.stat(passfile).st_mode & 0o777 == 0o600
    for login in (SUPERUSER, WORKER_LOGIN, ACCESS_LOGIN):
        for wrong in (None, "postgres", "attest"):
            with pytest.raises(psycopg2.OperationalError, match="password"):
                psycopg2.connect(host="127.0.0.1", port=url.port, user=login, dbname="attest",
                                 password=wrong, passfile=os.devnull, connect_timeout=5).close()


def test_logins_are_nothing_but_members_of_their_group(owner: Engine) -> None:
    attributes = _rows(owner, "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, "
                              "rolreplication FROM pg_roles WHERE rolname = ANY(:r)",
                       r=[WORKER_LOGIN, ACCESS_LOGIN, "attest_app", "attest_access_service"])
    assert {row[0] for row in attributes} == {WORKER_LOGIN, ACCESS_LOGIN, "attest_app",
                                              "attest_access_service"}
    assert all(not any(row[1:]) for row in attributes), attributes
    member_of = _rows(owner, "SELECT r.rolname, g.rolname FROM pg_auth_members m "
                             "JOIN pg_roles r ON r.oid = m.member JOIN pg_roles g ON g.oid = m.roleid "
                             "WHERE r.rolname = ANY(:r)", r=[WORKER_LOGIN, ACCESS_LOGIN, "attest_app"])
    assert member_of == {(WORKER_LOGIN, "attest_app"), (ACCESS_LOGIN, "attest_access_service")}


# -- the worker login -----------------------------------------------------------------------


def test_the_writer_role_has_exactly_the_listed_grants(owner: Engine) -> None:
    tables = _rows(owner, "SELECT table_name, privilege_type FROM information_schema.role_table_grants "
                          "WHERE grantee = 'attest_app'")
    assert tables == WORKER_TABLE_GRANTS
    columns = _rows(owner, "SELECT c.table_name, c.column_name, c.privilege_type "
                           "FROM information_schema.role_column_grants c "
                           "WHERE c.grantee = 'attest_app' AND NOT EXISTS (SELECT 1 FROM "
                           "information_schema.role_table_grants t WHERE t.grantee = c.grantee "
                           "AND t.table_name = c.table_name AND t.privilege_type = c.privilege_type)")
    assert columns == WORKER_COLUMN_GRANTS
    sequences = _rows(owner, "SELECT c.relname, a.privilege_type FROM pg_class c, aclexplode(c.relacl) a "
                             "WHERE c.relkind = 'S' AND a.grantee = 'attest_app'::regrole")
    assert sequences == {("audit_log_seq_seq", "USAGE"), ("audit_checkpoints_id_seq", "USAGE")}
    assert not _rows(owner, "SELECT 1 WHERE has_schema_privilege('attest_app', current_schema(), "
                            "'CREATE') OR has_database_privilege('attest_app', current_database(), "
                            "'CREATE')")


@pytest.mark.parametrize("statement", [
    "SELECT subject_ref FROM data_keys",
    "SELECT wrapped FROM data_keys",
    "SELECT sealed FROM tier_wrapping_keys",
    "SELECT label_sealed FROM inferences",  # migration 0016: sealed labels go in, never out
    "SELECT score_sealed FROM inferences",
    *(f"SELECT * FROM {table}" for table in FIELD_TABLES),  # noqa: S608 - known table names
    "UPDATE audit_log SET actor = actor",
    "DELETE FROM audit_log",
    "TRUNCATE audit_log",
    "UPDATE audit_checkpoints SET count = count",
    "DELETE FROM events",
    "UPDATE signing_keys SET revoked_at = now()",
    "SELECT * FROM access_requests",
    "SET ROLE attest_tax_bureau",
    "SET ROLE attest_access_service",
    "CREATE TABLE attest_worker_was_here (id int)",
])
def test_the_worker_login_is_refused(recorded: StackInfo, statement: str) -> None:
    _refused(recorded.worker_database_url, statement)


# -- the access login -----------------------------------------------------------------------


def test_the_access_login_can_only_become_department_roles(recorded: StackInfo, owner: Engine) -> None:
    departments = {row[0] for row in _rows(owner, "SELECT DISTINCT db_role FROM department_row_access")}
    assert departments
    roles = {row[0] for row in _rows(owner, "SELECT rolname FROM pg_roles WHERE rolname NOT LIKE 'pg\\_%'")}
    reachable = {role for role in roles if _rows(
        owner, "SELECT 1 WHERE pg_has_role(:login, :role, 'MEMBER')", login=ACCESS_LOGIN, role=role)}
    assert reachable == {ACCESS_LOGIN, "attest_access_service", *departments}
    for role in roles - reachable:
        _refused(recorded.access_database_url, f'SET ROLE "{role}"')
    # Department privileges need SET ROLE: the service role does not inherit them.
    assert not _rows(owner, "SELECT 1 FROM pg_roles WHERE rolname = 'attest_access_service' AND rolinherit")


def test_department_roles_read_no_subject_ref_and_no_other_department_rows(owner: Engine) -> None:
    departments = {row[0] for row in _rows(owner, "SELECT DISTINCT db_role FROM department_row_access")}
    for role in departments:
        assert not _rows(owner, "SELECT 1 WHERE has_column_privilege(:r, 'data_keys', 'subject_ref', "
                                "'SELECT')", r=role), role
        assert not _rows(owner, "SELECT 1 FROM pg_roles WHERE rolname = :r AND (rolbypassrls OR "
                                "rolcanlogin)", r=role), role
    forced = _rows(owner, "SELECT relname FROM pg_class WHERE relname = ANY(:t) AND relrowsecurity",
                   t=list(FIELD_TABLES))
    assert forced == {(table,) for table in FIELD_TABLES}
    # Every policy that lets a field table's rows be read limits them to the departments
    # that own them (department_row_access, tests/protection/test_grants.py).
    policies = _rows(owner, "SELECT tablename, qual FROM pg_policies WHERE tablename = ANY(:t) "
                            "AND cmd IN ('SELECT', 'ALL')", t=list(FIELD_TABLES))
    assert {table for table, _ in policies} == set(FIELD_TABLES)
    assert all("department_row_access" in (qual or "") for _, qual in policies), policies
