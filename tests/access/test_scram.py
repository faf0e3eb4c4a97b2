"""An embedded Postgres initialised with scram-sha-256: generated passwords, nothing without them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from devstack.postgres import (
    SUPERUSER,
    SUPERUSER_PASSWORD_FILE,
    PostgresHandle,
    ensure_access_login,
    generated_password,
    start_postgres,
    stop_postgres,
)
from devstack.processes import choose_port


@pytest.fixture(scope="module")
def scram_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresHandle]:
    state = tmp_path_factory.mktemp("scram-state")
    state.chmod(0o755)  # the server runs as another system user when the tests run as root
    handle = start_postgres(state / "pg", choose_port(0), auth="scram-sha-256")
    try:
        yield handle
    finally:
        stop_postgres(handle.pgdata)


def _connect(port: int, user: str, password: str | None) -> None:
    psycopg2.connect(host="127.0.0.1", port=port, user=user, dbname="attest",
                     password=password, connect_timeout=5).close()


def test_the_superuser_needs_its_generated_password(scram_server: PostgresHandle) -> None:
    password_file = scram_server.pgdata.parent / SUPERUSER_PASSWORD_FILE
    assert password_file.stat().st_mode & 0o777 == 0o600
    assert scram_server.password == password_file.read_text().strip()
    assert len(scram_server.password) >= 32 and scram_server.password in scram_server.url
    assert "password" not in repr(scram_server) and scram_server.password not in repr(scram_server)
    _connect(scram_server.port, SUPERUSER, scram_server.password)
    for wrong in (None, "postgres", scram_server.password[:-1]):
        with pytest.raises(psycopg2.OperationalError, match="password"):
            _connect(scram_server.port, SUPERUSER, wrong)


def test_the_access_login_needs_its_password_too(scram_server: PostgresHandle, tmp_path: Path) -> None:
    password = generated_password(tmp_path / "access.password")
    url = ensure_access_login(scram_server.port, password, scram_server.password)
    assert url.startswith("postgresql://attest_access:")
    _connect(scram_server.port, "attest_access", password)
    with pytest.raises(psycopg2.OperationalError, match="password"):
        _connect(scram_server.port, "attest_access", "guess")


def test_a_restart_keeps_the_password(scram_server: PostgresHandle) -> None:
    stop_postgres(scram_server.pgdata)
    again = start_postgres(scram_server.pgdata, scram_server.port)  # no auth given: kept as initialised
    assert again.password == scram_server.password
    _connect(again.port, SUPERUSER, again.password)
