"""The audit log: chained, idempotent appends and signed checkpoints; the read side.

The hash chain itself (encoding, hashes, checkpoint notes, verification) is pure code in
``audit.chain``; this module only moves rows in and out of Postgres.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, text
from sqlalchemy.exc import IntegrityError, ProgrammingError

from audit.chain import CHECKPOINT_ACTION, GENESIS, hashed_view, json_safe, row_hash
from audit.checkpoints import CheckpointSigner, NoteVerifier, checkpoint_body, checkpoint_due
from audit.errors import AuditTablesMissing
from audit.verify import ChainRow, StoredCheckpoint, Verdict, verify_chain
from schemas.audit import AuditRecord
from storage.columnar import copy_insert
from storage.db import engine_for, run_db
from storage.models import AuditCheckpointRow, AuditLogRow

#: pg_advisory_xact_lock key serializing appends to the chain (ASCII "attestau").
APPEND_LOCK = 0x6174746573746175
_STRING_LIMITS = {c.name: c.type.length for c in AuditLogRow.__table__.columns
                  if getattr(c.type, "length", None) and c.name in AuditRecord.model_fields}
RECORD_COLUMNS = [AuditLogRow.__table__.c[name] for name in AuditRecord.model_fields]
_STORED_IDS = text("SELECT audit_id FROM audit_log WHERE audit_id = ANY(CAST(:ids AS uuid[]))")


def record_from_row(mapping: Any) -> AuditRecord:
    """A stored row (any mapping with the record's columns) as the record it was."""
    return AuditRecord.model_validate({
        k: (str(v) if k == "audit_id" else v) for k, v in mapping.items()
        if k in AuditRecord.model_fields
    })


@dataclass(frozen=True)
class CheckpointPolicy:
    """When and with which key the appender signs checkpoints (settings + service key)."""

    every: int
    interval_s: float
    signer: CheckpointSigner


@dataclass(frozen=True)
class Checkpoint:
    last_seq: int
    head_hash: str
    text: str
    key_id: str
    created_at: datetime


@dataclass(frozen=True)
class AppendResult:
    stored: int
    head_seq: int
    head_hash: str
    checkpoint: Checkpoint | None = None
    #: Records whose audit_id was already stored with *other* content: never dropped
    #: silently (a forged record may have pre-empted the real one); the sink raises an alarm.
    conflicts: tuple[AuditConflict, ...] = ()


@dataclass(frozen=True)
class AuditConflict:
    """The same audit_id twice with different content: what was stored, what arrived."""

    audit_id: str
    stored: AuditRecord
    arrived: AuditRecord


def record_problem(record: AuditRecord) -> str | None:
    """Why Postgres would refuse this record (so the sink dead-letters it), or None."""
    try:
        uuid.UUID(record.audit_id)
    except ValueError:
        return "audit_id is not a UUID"
    for name, limit in _STRING_LIMITS.items():
        value = getattr(record, name)
        if isinstance(value, str) and len(value) > limit:
            return f"{name} is longer than {limit} characters"
    if record.source_partition is not None and not -2**31 <= record.source_partition < 2**31:
        return "source_partition is out of range"
    if record.source_offset is not None and not -2**63 <= record.source_offset < 2**63:
        return "source_offset is out of range"
    try:  # what _stored_form does: near year 1 or 9999 an offset pushes it out of range
        in_utc = (record.time if record.time.tzinfo else record.time.replace(tzinfo=UTC)).astimezone(UTC)
    except (OverflowError, ValueError):
        return "time is out of range"
    if not 1 < in_utc.year < 9999:
        return "time is out of range (years 2-9998)"
    # The fields themselves, not a model_dump (a copy of the whole record per record was
    # most of this check's cost in the sink); every field, so a new one is checked too.
    stack: list[Any] = [getattr(record, name) for name in AuditRecord.model_fields]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str):
            if "\x00" in value:
                return "a text field contains a NUL character"
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return "a text field is not valid Unicode"
    return None


def _stored_form(record: AuditRecord) -> dict[str, Any]:
    """The row as it will be stored and read back: normalised id, UTC time, JSON-safe detail."""
    row = record.model_dump()
    row["audit_id"] = uuid.UUID(record.audit_id)
    time = record.time if record.time.tzinfo else record.time.replace(tzinfo=UTC)
    row["time"] = time.astimezone(UTC)
    row["detail"] = json_safe(record.detail)
    return row


def _head(conn: Connection) -> tuple[int, str]:
    last = conn.execute(
        select(AuditLogRow.seq, AuditLogRow.row_hash).order_by(AuditLogRow.seq.desc()).limit(1)
    ).first()
    return (last.seq, last.row_hash) if last else (0, GENESIS)


def _append(
    conn: Connection, records: list[AuditRecord]
) -> tuple[int, int, str, tuple[AuditConflict, ...]]:
    """Chain and insert ``records`` that are not stored yet; the caller holds the lock.

    Approach: under a transaction-level advisory lock, (1) drop the audit_ids already stored
    (a redelivery) or repeated in the batch, (2) read the head, (3) give each new row the
    next seq explicitly and hash it after its predecessor, (4) insert plainly. Explicit seqs
    keep the chain gapless (a sequence leaves gaps on rollback, and gaps mean deletion here),
    and filtering *before* hashing means a skipped duplicate never leaves a hole in the
    chain. A plain INSERT (no ON CONFLICT) turns a race with a writer that ignores the lock
    into an error and a retry, never into a silent gap.
    """
    rows: dict[uuid.UUID, dict[str, Any]] = {}
    arrived: dict[uuid.UUID, AuditRecord] = {}
    for record in records:
        row = _stored_form(record)
        rows.setdefault(row["audit_id"], row)
        arrived.setdefault(row["audit_id"], record)
    conflicts: list[AuditConflict] = []
    if rows:
        stored_ids = [uuid.UUID(str(i)) for i in
                      conn.execute(_STORED_IDS, {"ids": [str(i) for i in rows]}).scalars()]
        if stored_ids:
            conflicts = _conflicts(conn, {i: rows[i] for i in stored_ids}, arrived)
        for audit_id in stored_ids:
            rows.pop(audit_id, None)
    seq, prev = _head(conn)
    fresh = list(rows.values())
    for row in fresh:
        seq += 1
        row["seq"], row["prev_hash"] = seq, prev
        row["row_hash"] = prev = row_hash(hashed_view(row), prev, seq)
    if fresh:
        copy_insert(conn, "audit_log", _AUDIT_COLUMNS,
                    [[row[name] for row in fresh] for name, _ in _AUDIT_COLUMNS])
    return len(fresh), seq, prev, tuple(conflicts)


_DECISION_FIELDS = ("action", "outcome", "reason", "correlation_id", "subject_ids", "source_topic",
                    "source_partition", "source_offset")


def _decision(view: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(view.get(name) for name in _DECISION_FIELDS)


def _conflicts(
    conn: Connection, again: dict[uuid.UUID, dict[str, Any]], arrived: dict[uuid.UUID, AuditRecord]
) -> list[AuditConflict]:
    """Already-stored ids whose stored record states another decision than this one.

    Compared: what the id stands for (action, outcome, reason, correlation id, subjects,
    source position), in the chain's view. Not compared: actor, time and detail, which
    differ between honest copies of one decision (a redelivery after a crash records
    ``redelivered``; a replay's classification has the operator as actor and may round a
    score differently). A forged record that changes the decision itself is caught; one
    that copies it changes no fact the chain states.
    """
    stored = conn.execute(select(*RECORD_COLUMNS).where(
        AuditLogRow.audit_id.in_(list(again)))).all()
    out = []
    for row in stored:
        record = record_from_row(row._mapping)
        audit_id = uuid.UUID(record.audit_id)
        if _decision(hashed_view(_stored_form(record))) != _decision(hashed_view(again[audit_id])):
            out.append(AuditConflict(str(audit_id), record, arrived[audit_id]))
    return out


_AUDIT_COLUMNS = (
    ("seq", "bigint"), ("audit_id", "uuid"), ("time", "timestamptz"), ("actor", "text"),
    ("action", "text"), ("outcome", "text"), ("reason", "text"), ("correlation_id", "text"),
    ("subject_ids", "text[]"), ("source_topic", "text"), ("source_partition", "int"),
    ("source_offset", "bigint"), ("detail", "jsonb"), ("prev_hash", "text"), ("row_hash", "text"),
)


def _maybe_checkpoint(
    conn: Connection, policy: CheckpointPolicy, head_seq: int, head_hash: str
) -> Checkpoint | None:
    """Sign and store a checkpoint of the head when ``checkpoint_due`` says so."""
    cp = AuditCheckpointRow
    last = conn.execute(
        select(cp.last_seq, func.extract("epoch", func.now() - cp.created_at))
        .order_by(cp.last_seq.desc()).limit(1)
    ).first()
    covered, age = (int(last[0]), float(last[1])) if last else (0, None)
    if head_seq <= covered:
        return None
    pending = conn.execute(
        select(func.count()).select_from(AuditLogRow)
        .where(AuditLogRow.seq > covered, AuditLogRow.action != CHECKPOINT_ACTION)
    ).scalar_one()
    if age is None:  # no checkpoint yet: age of the first record
        first = conn.execute(select(func.extract("epoch", func.now() - AuditLogRow.recorded_at))
                             .where(AuditLogRow.seq == covered + 1)).scalar()
        age = None if first is None else float(first)
    if not checkpoint_due(pending, age, policy.every, policy.interval_s):
        return None
    note = policy.signer.sign(checkpoint_body(head_seq, head_hash))
    created = conn.execute(
        insert(cp).values(last_seq=head_seq, count=head_seq, head_hash=head_hash,
                          checkpoint=note, key_id=policy.signer.name)
        .returning(cp.created_at)
    ).scalar_one()
    return Checkpoint(head_seq, head_hash, note, policy.signer.name, created)


def append_chained(
    url: str, records: list[AuditRecord], policy: CheckpointPolicy | None = None
) -> AppendResult:
    """Append to the chain in one transaction; already stored audit_ids are skipped.

    With a ``policy``, a checkpoint is signed in the same transaction when it is due, so it
    covers exactly the head this append produced.
    """

    def write() -> AppendResult:
        for attempt in range(3):
            try:
                with engine_for(url).connect() as conn:
                    conn.execution_options(isolation_level="READ COMMITTED")
                    with conn.begin():
                        # READ COMMITTED: each statement after the lock sees the rows
                        # committed by the previous lock holder.
                        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": APPEND_LOCK})
                        stored, seq, head, conflicts = _append(conn, records)
                        checkpoint = (_maybe_checkpoint(conn, policy, seq, head)
                                      if policy is not None else None)
                        return AppendResult(stored, seq, head, checkpoint, conflicts)
            except IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    return run_db(write)


def append_records(url: str, records: list[AuditRecord]) -> int:
    """Append without checkpointing; returns how many records were newly stored."""
    return append_chained(url, records).stored if records else 0


def chain_head(url: str) -> tuple[int, str]:
    """(number of rows, hash of the last row): what a checkpoint would sign now."""

    def read() -> tuple[int, str]:
        with engine_for(url).connect() as conn:
            return _head(conn)

    return run_db(read)


@contextmanager
def tables_checked() -> Iterator[None]:
    """Missing or out-of-date audit tables as ``AuditTablesMissing`` (one sentence, exit 1)."""
    try:
        yield
    except ProgrammingError as exc:
        if "audit_checkpoints" in str(exc) or "prev_hash" in str(exc) or "audit_log" in str(exc):
            raise AuditTablesMissing(
                "the audit tables are missing or out of date: run `attest db upgrade`") from None
        raise


def verify_stored_chain(
    url: str, verifiers: list[NoteVerifier], batch: int = 5000,
    witness: StoredCheckpoint | None = None,
) -> Verdict:
    """Recompute the stored chain and check every checkpoint, in one consistent snapshot.

    Two server-side cursors (rows, checkpoints) in one REPEATABLE READ transaction: memory
    stays flat, and rows appended meanwhile are simply not part of this verification.
    ``witness``: a checkpoint from outside the database (audit.verify.verify_chain).
    """
    chain_columns = [AuditLogRow.seq, AuditLogRow.prev_hash, AuditLogRow.row_hash, *RECORD_COLUMNS]

    def read() -> Verdict:
        with engine_for(url).connect() as conn:
            conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            with conn.begin():
                rows = conn.execute(select(*chain_columns).order_by(AuditLogRow.seq)
                                    .execution_options(yield_per=batch))
                cps = conn.execute(
                    select(AuditCheckpointRow.last_seq, AuditCheckpointRow.head_hash,
                           AuditCheckpointRow.checkpoint)
                    .order_by(AuditCheckpointRow.last_seq).execution_options(yield_per=batch)
                )
                return verify_chain(
                    (ChainRow(r.seq, r.prev_hash, r.row_hash, hashed_view(r._mapping)) for r in rows),
                    (StoredCheckpoint(c.last_seq, c.head_hash, c.checkpoint) for c in cps),
                    verifiers, witness,
                )

    return run_db(read)


def count_checkpoints(url: str) -> int:
    def read() -> int:
        with engine_for(url).connect() as conn:
            return conn.execute(select(func.count()).select_from(AuditCheckpointRow)).scalar_one()

    return run_db(read)


# --- the read side -----------------------------------------------------------------------


