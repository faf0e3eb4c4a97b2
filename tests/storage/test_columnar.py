"""The columnar batch insert keeps every value exactly: empty is not NULL, JSON and arrays
round-trip, and a value Postgres refuses fails the statement (the caller isolates it)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DataError, IntegrityError

from storage.columnar import columnar_insert, copy_insert
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


AUDIT_LIKE = (("id", "uuid"), ("n", "bigint"), ("t", "text"), ("b", "bytea"), ("j", "jsonb"),
              ("a", "text[]"), ("at", "timestamptz"))


def test_copy_keeps_every_value_exactly(database_url: str, table: str) -> None:
    """COPY's text format gives backslash, tab, newline and CR a meaning, and an array
    literal gives quotes, commas and braces one: each must arrive as sent."""
    now = datetime(2026, 12, 3, 1, 2, 3, 456789, tzinfo=UTC)
    hostile = 'tab\there\nnew\rcr \\N \\. back\\slash "quote" {brace} a,b \u2028 漢 é'
    rows = [
        (str(uuid.uuid4()), 2**40, "", b"", {"k": hostile, "n": 1.5, "e": []}, [], now),
        (str(uuid.uuid4()), None, None, None, None, [hostile, "", "NULL", "\\"], None),
        (str(uuid.uuid4()), -1, hostile, b"\x00\\\t\n\xff", [hostile], ["x,y", "}{"], now),
        (str(uuid.uuid4()), 0, "\\N", b"\\N", "\\N", ["\\N"], now),
    ]
    with engine_for(database_url).begin() as conn:
        copy_insert(conn, table, AUDIT_LIKE, [list(c) for c in zip(*rows, strict=True)])
    with engine_for(database_url).connect() as conn:
        stored = {str(r[0]): tuple(r[1:]) for r in conn.execute(
            text(f"SELECT id, n, t, b, j, a, at FROM {table}"))}  # noqa: S608 - our own name
    assert len(stored) == len(rows)
    for row in rows:
        n, t, b, j, a, at = stored[row[0]]
        assert (n, t, None if b is None else bytes(b), j, a, at) == row[1:]


def test_copy_refusals_are_sqlalchemy_errors_and_roll_back(database_url: str, table: str) -> None:
    first = str(uuid.uuid4())
    with pytest.raises(IntegrityError), engine_for(database_url).begin() as conn:
        copy_insert(conn, table, (("id", "uuid"),), [[first, first]])
    with pytest.raises(DataError), engine_for(database_url).begin() as conn:
        copy_insert(conn, table, (("id", "uuid"), ("j", "jsonb")), [[first], [{"k": "nul\x00"}]])
    with pytest.raises(DataError), engine_for(database_url).begin() as conn:
        copy_insert(conn, table, (("id", "uuid"), ("t", "text")), [[first], ["nul\x00"]])
    # A str where a UUID belongs is escaped like text: its tab cannot shift it into the next column.
    with pytest.raises(DataError), engine_for(database_url).begin() as conn:
        copy_insert(conn, table, (("id", "uuid"), ("t", "text")), [[f"{first}\tinjected"], ["t"]])
    with engine_for(database_url).connect() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 0  # noqa: S608
