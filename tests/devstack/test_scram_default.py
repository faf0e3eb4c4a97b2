"""A new embedded Postgres asks for passwords (scram-sha-256) by default; none is ever printed.

A state folder initialised with trust (``ATTEST_DEV_POSTGRES_AUTH=trust``, throwaway runs)
keeps working: a cluster keeps the authentication it was initialised with, and ``up`` says so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from config.settings import Settings
from devstack import stack
from devstack.postgres import cluster_auth

pytestmark = pytest.mark.integration


@pytest.fixture
def state() -> Iterator[Path]:
    """A state folder outside pytest's basetemp, which a concurrent pytest run may prune while
    this server still uses it (tests/conftest.py does the same)."""
    folder = Path(tempfile.mkdtemp(prefix="attest-scram-test-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _attest(state: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTEST_")}
    env["ATTEST_STATE_DIR"] = str(state)
    done = subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_the_default_asks_for_passwords_and_prints_none(state: Path) -> None:
    assert Settings.model_fields["dev_postgres_auth"].default == "scram-sha-256"
    settings = Settings(state_dir=state, dev_kafka_port=0, dev_postgres_port=0)
    info = stack.up(settings, notice=lambda _: None)
    try:
        assert cluster_auth(state / "pg") == "scram-sha-256"
        passwords = {path.name: path.read_text().strip() for path in state.glob("*.password")}
        assert set(passwords) == {"postgres-superuser.password", "postgres-access.password",
                                  "postgres-worker.password"}
        for path in [*state.glob("*.password"), *state.glob("*.pgpass")]:
            assert path.stat().st_mode & 0o777 == 0o600, path
        output = _attest(state, "dev", "status") + _attest(state, "dev", "env")
        for name, password in passwords.items():
            assert password not in output, name
            assert password not in info.database_url, name
        assert str(state / "postgres-superuser.pgpass") in output  # where the password is
        # What `attest dev env` prints is enough on its own, as psql would use it.
        env_url = next(line.split("=", 1)[1] for line in _attest(state, "dev", "env").splitlines()
                       if line.startswith("ATTEST_DATABASE_URL="))
        with psycopg2.connect(env_url, connect_timeout=5) as conn, conn.cursor() as cur:
            cur.execute("SELECT current_user")
            assert cur.fetchone() == ("postgres",)
        conn.close()
    finally:
        stack.down(settings)


def test_a_state_folder_initialised_with_trust_keeps_working(state: Path) -> None:
    trust = Settings(state_dir=state, dev_kafka_port=0, dev_postgres_port=0,
                     dev_postgres_auth="trust")
    stack.up(trust, notice=lambda _: None)
    stack.down(trust)
    settings = Settings(state_dir=state, dev_kafka_port=0, dev_postgres_port=0)  # the default
    notices: list[str] = []
    info = stack.up(settings, notice=notices.append)
    try:
        assert cluster_auth(state / "pg") == "trust"
        assert any("initialised with trust" in notice for notice in notices), notices
        assert "passfile" not in info.database_url
        with psycopg2.connect(info.database_url, connect_timeout=5) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_roles WHERE rolname IN ('attest_worker', 'attest_access')")
            assert cur.fetchone() == (2,)
        conn.close()
    finally:
        stack.down(settings)
