"""compose/logins.sql, what docker-compose's `logins` service runs, on a real Postgres.

Run with the wheel's psql against a fresh scram-sha-256 server migrated to head (not the
session's: roles are server-wide and the session's logins must keep their passwords).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from devstack.postgres import SUPERUSER, PostgresHandle, bin_dir, start_postgres, stop_postgres
from devstack.processes import choose_port
from storage import migrate

pytestmark = pytest.mark.integration
LOGINS_SQL = Path(__file__).resolve().parents[2] / "compose" / "logins.sql"


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresHandle]:
    # Not under pytest's basetemp, which a concurrent pytest run may prune (tests/conftest.py).
    state = Path(tempfile.mkdtemp(prefix="attest-compose-logins-"))
    state.chmod(0o755)  # the server runs as another system user when the tests run as root
    try:
        handle = start_postgres(state / "pg", choose_port(0), auth="scram-sha-256")
        try:
            migrate.upgrade(handle.url)
            yield handle
        finally:
            stop_postgres(handle.pgdata)
    finally:
        shutil.rmtree(state, ignore_errors=True)


def _logins(server: PostgresHandle, **passwords: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update({"PGHOST": "127.0.0.1", "PGPORT": str(server.port), "PGUSER": SUPERUSER,
                "PGDATABASE": "attest", "PGPASSWORD": server.password or "", **passwords})
    return subprocess.run([str(bin_dir() / "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-f", str(LOGINS_SQL)],
                          env=env, capture_output=True, text=True, timeout=60, check=False)


def _user(server: PostgresHandle, login: str, password: str) -> str:
    with psycopg2.connect(host="127.0.0.1", port=server.port, user=login, password=password,
                          dbname="attest", passfile=os.devnull, connect_timeout=5) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT current_user")
            user = cur.fetchone()[0]
    conn.close()
    return user


def test_logins_are_created_rekeyed_and_refused_without_passwords(server: PostgresHandle) -> None:
    missing = _logins(server, WORKER_DB_PASSWORD="only-one")
    assert missing.returncode != 0 and "ACCESS_DB_PASSWORD" in missing.stderr
    assert missing.stderr.count("only-one") == 0

    done = _logins(server, WORKER_DB_PASSWORD="w-first", ACCESS_DB_PASSWORD="a-first")
    assert done.returncode == 0, done.stderr
    assert "w-first" not in done.stdout + done.stderr
    assert _user(server, "attest_worker", "w-first") == "attest_worker"
    assert _user(server, "attest_access", "a-first") == "attest_access"

    again = _logins(server, WORKER_DB_PASSWORD="w-second", ACCESS_DB_PASSWORD="a-second")
    assert again.returncode == 0, again.stderr  # idempotent: sets the passwords anew
    assert _user(server, "attest_worker", "w-second") == "attest_worker"
    with pytest.raises(psycopg2.OperationalError, match="password"):
        _user(server, "attest_worker", "w-first")

    with psycopg2.connect(server.url, connect_timeout=5) as conn, conn.cursor() as cur:
        cur.execute("SELECT r.rolname, g.rolname FROM pg_auth_members m JOIN pg_roles r ON "
                    "r.oid = m.member JOIN pg_roles g ON g.oid = m.roleid WHERE r.rolname = ANY(%s)",
                    (["attest_worker", "attest_access"],))
        assert set(cur.fetchall()) == {("attest_worker", "attest_app"),
                                       ("attest_access", "attest_access_service")}
        cur.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s) AND (rolsuper OR "
                    "rolcreaterole OR rolcreatedb OR rolbypassrls)", (["attest_worker", "attest_access"],))
        assert cur.fetchall() == []
    conn.close()
