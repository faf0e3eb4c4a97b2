"""The columnar batch insert keeps every value exactly: empty is not NULL, JSON and arrays
round-trip, and a value Postgres refuses fails the statement (the caller isolates it)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DataError

from storage.columnar import columnar_insert
from storage.db import engine_for

pytestmark = pytest.mark.integration

KINDS = (("id", "uuid"), ("n", "bigint"), ("t", "text"), ("b", "bytea"), ("j", "jsonb"),
         ("a", "text[]"), ("at", "timestamptz"))


@pytest.fixture()
def table(database_url: str) -> str:
    name = f"columnar_{uuid.uuid4().hex[:8]}"
    with engine_for(database_url).begin() as conn:
        conn.execute(text(f"CREATE TABLE {name} (id uuid PRIMARY KEY, n bigint, t text, b bytea, "
                          "j jsonb, a text[], at timestamptz)"))
    yield name
    with engine_for(database_url).begin() as conn:
        conn.execute(text(f"DROP TABLE {name}"))


def test_values_round_trip_exactly(database_url: str, table: str) -> None:
    now = datetime(2026, 12, 1, 1, 2, 3, 456789, tzinfo=UTC)
    rows = [
        (str(uuid.uuid4()), 2**40, "", b"", {"k": "a,b", "n": 1}, [], now),
        (str(uuid.uuid4()), None, None, None, None, ["x,y", "é"], None),
        (str(uuid.uuid4()), -1, "comma, 'quote' \\ é 漢", b"\x00,\xff", ["list"], [""], now),
    ]
    with engine_for(database_url).begin() as conn:
        inserted = columnar_insert(conn, table, KINDS, [list(c) for c in zip(*rows, strict=True)],
                                   conflict_key="id", returning="id")
        again = columnar_insert(conn, table, KINDS, [list(c) for c in zip(*rows, strict=True)],
                                conflict_key="id", returning="id")
    assert sorted(map(str, inserted)) == sorted(r[0] for r in rows) and again == []
    with engine_for(database_url).connect() as conn:
        stored = {str(r[0]): tuple(r[1:]) for r in conn.execute(
            text(f"SELECT id, n, t, b, j, a, at FROM {table}"))}  # noqa: S608 - our own name
    for row in rows:
        n, t, b, j, a, at = stored[row[0]]
        assert (n, t, None if b is None else bytes(b), j, a, at) == row[1:]


def test_a_value_postgres_refuses_fails_the_statement(database_url: str, table: str) -> None:
    with pytest.raises(DataError), engine_for(database_url).begin() as conn:
        columnar_insert(conn, table, (("id", "uuid"), ("j", "jsonb")),
                        [[str(uuid.uuid4())], [{"k": "nul\x00"}]])
