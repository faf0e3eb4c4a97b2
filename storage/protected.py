"""Repositories of field protection: key records, sealed fields, protected reads, forgetting.

Only SQL lives here; sealing and opening are ``protection.fields``'s. Reads run under
the department's Postgres role (``SET LOCAL ROLE``), so column grants and row-level security
check every read a second time after the policy code did.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, text
from sqlalchemy.exc import DataError, ProgrammingError

from access.policy import Approval
from protection.fields import DataKeyRecord, SealedEvent, WrappingKeyRecord
from protection.reader import KeyRecords
from protection.tiers import SchemaProtection, Tier
from schemas.catalog import APPROVAL_V1
from storage.columnar import columnar_insert
from storage.db import engine_for, run_db
from storage.errors import DatabaseRefused, StorageError
from storage.models import EventRow
from storage.protected_models import FIELD_TABLES, DataKeyRow, TierWrappingKeyRow

_DB_ROLE = re.compile(r"^attest_[a-z0-9_]{1,56}$")


# -- writing (called inside store_events' transaction) --------------------------------------


def insert_key_records(
    conn: Connection, wrapping_keys: Sequence[WrappingKeyRecord], data_keys: Sequence[DataKeyRecord]
) -> None:
    """Store new key records; ones already stored (an earlier attempt committed) are skipped."""
    if wrapping_keys:
        columnar_insert(
            conn, "tier_wrapping_keys",
            (("id", "uuid"), ("tier", "text"), ("kek_version", "int"), ("sealed", "bytea")),
            list(zip(*[(w.key_id, w.tier.label, w.kek_version, w.sealed) for w in wrapping_keys],
                     strict=True)),
            conflict_key="id",
        )
    if data_keys:
        columnar_insert(
            conn, "data_keys",
            (("id", "uuid"), ("tier", "text"), ("subject_domain", "text"), ("subject_ref", "bytea"),
             ("wrapping_key_id", "uuid"), ("wrapped", "bytea")),
            list(zip(*[(d.key_id, d.tier.label, d.subject_domain, d.subject_ref,
                        d.wrapping_key_id, d.wrapped) for d in data_keys], strict=True)),
            conflict_key="id",
        )


def shredding_epoch(conn: Connection) -> int:
    """The count of ``attest forget`` runs, share-locked until this transaction ends.

    The lock makes a forget wait for batches in flight, and batches wait for a forget in
    flight: a data key is never destroyed while a batch that uses it is being stored.
    """
    return int(conn.execute(
        text("SELECT epoch FROM data_key_shredding WHERE id = 1 FOR SHARE")).scalar_one())


def insert_sealed_events(conn: Connection, sealed: Sequence[SealedEvent]) -> None:
    """One protected-fields row per event, one statement per table."""
    by_table: dict[str, list[SealedEvent]] = {}
    for event in sealed:
        by_table.setdefault(event.table, []).append(event)
    for name, events in by_table.items():
        names = [c.name for c in FIELD_TABLES[name].columns]
        if names[:2] != ["event_id", "department"]:
            raise StorageError(f"{name} must start with event_id, department")
        kinds = (("event_id", "uuid"), ("department", "text"), *((n, "bytea") for n in names[2:]))
        values = [[e.event_id for e in events], [e.department for e in events]]
        for column in names[2:]:  # a protected field's ciphertext, or a blind index
            values.append([e.columns.get(column) or e.indexes.get(column) for e in events])
        columnar_insert(conn, name, kinds, values)


# -- reading -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RowFilter:
    """Which rows a read wants. ``subject_index`` is the blind index of the schema's subject."""

    event_id: str | None = None
    subject_index: bytes | None = field(default=None, repr=False)
    source: str | None = None
    since: datetime | None = None
    limit: int = 50


@dataclass(frozen=True, slots=True)
class ProtectedRow:
    """One event as a department role may see it: public payload plus the granted ciphertexts."""

    event_id: str
    typ: str
    source: str
    issued_at: datetime
    department: str
    public: dict[str, Any]
    ciphertexts: dict[str, bytes | None] = field(repr=False)


def _set_role(conn: Connection, db_role: str) -> None:
    if not _DB_ROLE.match(db_role):
        raise StorageError(f"{db_role!r} is not an Attest department role")
    quoted = conn.dialect.identifier_preparer.quote(db_role)
    conn.execute(text(f"SET LOCAL ROLE {quoted}"))


def read_protected(
    url: str,
    *,
    db_role: str,
    schema: SchemaProtection,
    columns: Sequence[str],
    where: RowFilter,
    key_ids_of: Callable[[list[bytes | None]], set[uuid.UUID]],
) -> tuple[list[ProtectedRow], KeyRecords]:
    """Rows of ``schema`` with only ``columns`` decrypted-to-be, read as ``db_role``.

    One read-only transaction. The rows are fetched under ``SET LOCAL ROLE``: Postgres refuses
    a column the role was not granted and row-level security hides other departments' rows.
    Then ``RESET ROLE``, and the key records of exactly those ciphertexts are read as the
    session's own login (the access service's): department roles may not read key records,
    whose ``subject_ref`` would name every subject by blind index (migration 0008).
    """
    table = FIELD_TABLES[schema.table]

    def read() -> tuple[list[ProtectedRow], KeyRecords]:
        with engine_for(url).begin() as conn:
            conn.execute(text("SET TRANSACTION READ ONLY"))
            _set_role(conn, db_role)
            stmt = (
                select(EventRow.event_id, EventRow.typ, EventRow.source, EventRow.issued_at,
                       EventRow.payload, table.c.department, *(table.c[c] for c in columns))
                .select_from(EventRow.__table__.join(table, table.c.event_id == EventRow.event_id))
                .where(EventRow.typ == schema.typ)
                .order_by(EventRow.issued_at.desc(), EventRow.event_id)
                .limit(where.limit)
            )
            if where.event_id is not None:
                stmt = stmt.where(EventRow.event_id == where.event_id)
            if where.subject_index is not None:
                subject = schema.field(schema.subject_field)
                if subject.index_column is None:
                    raise StorageError(f"{schema.typ} has no blind index on its subject")
                stmt = stmt.where(table.c[subject.index_column] == where.subject_index)
            if where.source is not None:
                stmt = stmt.where(EventRow.source == where.source)
            if where.since is not None:
                stmt = stmt.where(EventRow.issued_at >= where.since)
            rows = [
                ProtectedRow(
                    event_id=str(r.event_id), typ=r.typ, source=r.source, issued_at=r.issued_at,
                    department=r.department, public=dict(r.payload),
                    ciphertexts={c: (bytes(r._mapping[c]) if r._mapping[c] is not None else None)
                                 for c in columns},
                )
                for r in conn.execute(stmt)
            ]
            ids = key_ids_of([c for row in rows for c in row.ciphertexts.values()])
            conn.execute(text("RESET ROLE"))
            return rows, _key_records(conn, ids)

    try:
        return run_db(read)
    except (ProgrammingError, DataError) as exc:
        first = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseRefused(f"the database refused the read as {db_role}: {first}") from None


def load_key_records(url: str, key_ids: Collection[uuid.UUID]) -> KeyRecords:
    """The stored data and wrapping key records of ``key_ids`` (benchmarks, tests, tools)."""

    def read() -> KeyRecords:
        with engine_for(url).connect() as conn:
            return _key_records(conn, key_ids)

    return run_db(read)


def _key_records(conn: Connection, key_ids: Collection[uuid.UUID]) -> KeyRecords:
    if not key_ids:
        return KeyRecords({}, {})
    data_rows = conn.execute(
        select(DataKeyRow.id, DataKeyRow.tier, DataKeyRow.subject_domain, DataKeyRow.subject_ref,
               DataKeyRow.wrapping_key_id, DataKeyRow.wrapped, DataKeyRow.destroyed_at)
        .where(DataKeyRow.id.in_(list(key_ids)))
    ).all()
    data = {
        r.id: DataKeyRecord(
            key_id=r.id, tier=Tier.parse(r.tier), subject_domain=r.subject_domain,
            subject_ref=bytes(r.subject_ref) if r.subject_ref is not None else None,
            wrapping_key_id=r.wrapping_key_id,
            wrapped=bytes(r.wrapped) if r.wrapped is not None else None,
            destroyed_at=r.destroyed_at,
        )
        for r in data_rows
    }
    wrapping_ids = {d.wrapping_key_id for d in data.values() if d.wrapping_key_id is not None}
    wrapping = {}
    if wrapping_ids:
        for r in conn.execute(
            select(TierWrappingKeyRow.id, TierWrappingKeyRow.tier, TierWrappingKeyRow.kek_version,
                   TierWrappingKeyRow.sealed).where(TierWrappingKeyRow.id.in_(list(wrapping_ids)))
        ):
            wrapping[r.id] = WrappingKeyRecord(r.id, Tier.parse(r.tier), r.kek_version,
                                               bytes(r.sealed))
    return KeyRecords(data, wrapping)


def find_approvals(url: str, request_id: str) -> list[Approval]:
    """Every stored ``attest.approval.v1`` of ``request_id`` (their fields are public)."""

    def read() -> list[Approval]:
        stmt = (
            select(EventRow.event_id, EventRow.source, EventRow.issued_at, EventRow.payload)
            .where(EventRow.typ == APPROVAL_V1,
                   EventRow.payload["request_id"].astext == request_id)
            .order_by(EventRow.issued_at)
        )
        with engine_for(url).connect() as conn:
            rows = conn.execute(stmt).all()
        return [
            Approval(
                event_id=str(r.event_id), request_id=str(r.payload.get("request_id")),
                source=r.source, approver=str(r.payload.get("approver", "")),
                level=int(r.payload.get("level", 0)), decision=str(r.payload.get("decision")),
                issued_at=r.issued_at,
            )
            for r in rows
        ]

    return run_db(read)


# -- forgetting and rotation ----------------------------------------------------------------


