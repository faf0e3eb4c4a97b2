"""The only SQL of reconciliation: matches, breaks, decisions and the sealed pending state.

One batch of the reconciliation stage is one transaction: its matches, its breaks and the
matcher's new state are committed together, so a restarted worker resumes from a state that
agrees with what is stored. Inserts are idempotent on match id and break id.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Float,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID, insert

from storage.db import engine_for, run_db

metadata = MetaData()
recon_matches = Table(
    "recon_matches", metadata,
    Column("match_id", UUID(as_uuid=True), primary_key=True),
    Column("pairing", String(130), nullable=False),
    Column("stage", String(16), nullable=False),
    Column("rule", String(120), nullable=False),
    Column("score", Float(), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("status", String(16), nullable=False),
    Column("left_ids", ARRAY(UUID(as_uuid=True)), nullable=False),
    Column("right_ids", ARRAY(UUID(as_uuid=True)), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("difference_sealed", LargeBinary()),
    Column("matched_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    Column("decided_by", String(200)),
    Column("decided_at", DateTime(timezone=True)),
    Column("decision_reason", Text()),
)
recon_breaks = Table(
    "recon_breaks", metadata,
    Column("break_id", UUID(as_uuid=True), primary_key=True),
    Column("pairing", String(130), nullable=False),
    Column("record_id", UUID(as_uuid=True), nullable=False),
    Column("source", String(64), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("amount_sealed", LargeBinary()),
    Column("detail_sealed", LargeBinary()),
    Column("related_ids", ARRAY(UUID(as_uuid=True)), nullable=False),
    Column("opened_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
)
recon_state = Table(
    "recon_state", metadata,
    Column("name", String(64), primary_key=True),
    Column("sealed", LargeBinary(), nullable=False),
    Column("version", BigInteger(), nullable=False),
    Column("updated_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
)


class StaleState(Exception):
    """The stored state changed since this worker loaded it (``attest forget`` rewrote it):
    nothing of the step was stored; reload the state and run the step again."""


@dataclass(frozen=True, slots=True)
class MatchRow:
    match_id: str
    pairing: str
    stage: str
    rule: str
    score: float
    kind: str
    status: str
    left_ids: tuple[str, ...]
    right_ids: tuple[str, ...]
    currency: str = ""
    difference_sealed: bytes | None = None
    matched_at: datetime | None = None
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision_reason: str | None = None


@dataclass(frozen=True, slots=True)
class BreakRow:
    break_id: str
    pairing: str
    record_id: str
    source: str
    reason: str
    currency: str = ""
    amount_sealed: bytes | None = None
    detail_sealed: bytes | None = None
    related_ids: tuple[str, ...] = ()
    opened_at: datetime | None = None


def _uuids(ids: Sequence[str]) -> list[uuid.UUID]:
    return [uuid.UUID(i) for i in ids]


def _match_values(m: MatchRow) -> dict[str, object]:
    return {"match_id": uuid.UUID(m.match_id), "pairing": m.pairing, "stage": m.stage, "rule": m.rule,
            "score": m.score, "kind": m.kind, "status": m.status, "left_ids": _uuids(m.left_ids),
            "right_ids": _uuids(m.right_ids), "currency": m.currency,
            "difference_sealed": m.difference_sealed}


def _break_values(b: BreakRow) -> dict[str, object]:
    return {"break_id": uuid.UUID(b.break_id), "pairing": b.pairing, "record_id": uuid.UUID(b.record_id),
            "source": b.source, "reason": b.reason, "currency": b.currency,
            "amount_sealed": b.amount_sealed, "detail_sealed": b.detail_sealed,
            "related_ids": _uuids(b.related_ids)}


def save_step(url: str, name: str, sealed_state: bytes, version: int,
              matches: Sequence[MatchRow], breaks: Sequence[BreakRow]) -> tuple[set[str], set[str]]:
    """Store one step's matches, breaks and new state in one transaction.

    Returns the ids actually inserted (a redelivered step inserts nothing new). The state is
    written only over an older version (or over these very bytes: a retry after a commit whose
    answer was lost); otherwise someone else wrote it since it was loaded (``attest forget``
    removing a subject), the transaction rolls back and ``StaleState`` is raised.
    """
    def write() -> tuple[set[str], set[str]]:
        with engine_for(url).begin() as conn:
            new_matches: set[str] = set()
            new_breaks: set[str] = set()
            if matches:
                rows = conn.execute(insert(recon_matches).values([_match_values(m) for m in matches])
                                    .on_conflict_do_nothing(index_elements=["match_id"])
                                    .returning(recon_matches.c.match_id)).all()
                new_matches = {str(r.match_id) for r in rows}
            if breaks:
                rows = conn.execute(insert(recon_breaks).values([_break_values(b) for b in breaks])
                                    .on_conflict_do_nothing(index_elements=["break_id"])
                                    .returning(recon_breaks.c.break_id)).all()
                new_breaks = {str(r.break_id) for r in rows}
            stmt = insert(recon_state).values(name=name, sealed=sealed_state, version=version)
            written = conn.execute(stmt.on_conflict_do_update(
                index_elements=["name"],
                set_={"sealed": stmt.excluded.sealed, "version": stmt.excluded.version,
                      "updated_at": func.now()},
                where=or_(recon_state.c.version < stmt.excluded.version,
                          recon_state.c.sealed == stmt.excluded.sealed),
            ).returning(recon_state.c.version)).first()
            if written is None:
                raise StaleState(f"reconciliation state {name!r} changed since it was loaded")
            return new_matches, new_breaks

    return run_db(write)


def load_state(url: str, name: str) -> tuple[bytes, int] | None:
    def read() -> tuple[bytes, int] | None:
        with engine_for(url).connect() as conn:
            row = conn.execute(select(recon_state.c.sealed, recon_state.c.version)
                               .where(recon_state.c.name == name)).first()
        return (bytes(row.sealed), int(row.version)) if row else None

    return run_db(read)


def rewrite_states(conn: Connection, rewrite: Callable[[str, bytes], bytes | None]) -> int:
    """Rewrite every stored state inside the caller's transaction, under row locks.

    ``rewrite(name, sealed)`` returns the new sealed state, or None to leave it. A rewritten
    state gets the next version, so a worker that loaded the old one fails its next
    ``save_step`` (``StaleState``) and reloads instead of writing the old state back; a
    worker's ``save_step`` waiting on the lock sees the new version when it is released.
    Returns how many states were rewritten.
    """
    rows = conn.execute(select(recon_state.c.name, recon_state.c.sealed)
                        .order_by(recon_state.c.name).with_for_update()).all()
    changed = 0
    for row in rows:
        fresh = rewrite(row.name, bytes(row.sealed))
        if fresh is None:
            continue
        conn.execute(update(recon_state).where(recon_state.c.name == row.name)
                     .values(sealed=fresh, version=recon_state.c.version + 1, updated_at=func.now()))
        changed += 1
    return changed


def clear_sealed_values(conn: Connection, record_ids: Sequence[str]) -> int:
    """Inside the caller's transaction (``attest forget``), drop the sealed values of the
    finance breaks and matches of ``record_ids``: a break's amount and detail ("amount
    differs by ..."), a match's amount difference. Rows, reasons and ids stay (the report
    shows them without an amount); government breaks carry no amount and keep their detail
    (the rule's name). Returns how many rows lost a value."""
    if not record_ids:
        return 0
    ids = _uuids(record_ids)
    breaks = conn.execute(
        update(recon_breaks)
        .where(recon_breaks.c.record_id.in_(ids), recon_breaks.c.amount_sealed.is_not(None))
        .values(amount_sealed=None, detail_sealed=None)).rowcount
    matches = conn.execute(
        update(recon_matches)
        .where(or_(recon_matches.c.left_ids.overlap(ids), recon_matches.c.right_ids.overlap(ids)),
               recon_matches.c.difference_sealed.is_not(None))
        .values(difference_sealed=None)).rowcount
    return breaks + matches


def _match_row(r: object) -> MatchRow:
    m = r._mapping  # type: ignore[attr-defined]
    return MatchRow(
        match_id=str(m["match_id"]), pairing=m["pairing"], stage=m["stage"], rule=m["rule"],
        score=m["score"], kind=m["kind"], status=m["status"],
        left_ids=tuple(str(i) for i in m["left_ids"]), right_ids=tuple(str(i) for i in m["right_ids"]),
        currency=m["currency"],
        difference_sealed=bytes(m["difference_sealed"]) if m["difference_sealed"] is not None else None,
        matched_at=m["matched_at"], decided_by=m["decided_by"], decided_at=m["decided_at"],
        decision_reason=m["decision_reason"],
    )


def list_matches(url: str, since: datetime | None = None) -> list[MatchRow]:
    def read() -> list[MatchRow]:
        query = select(recon_matches).order_by(recon_matches.c.matched_at, recon_matches.c.match_id)
        if since is not None:
            query = query.where(recon_matches.c.matched_at >= since)
        with engine_for(url).connect() as conn:
            return [_match_row(r) for r in conn.execute(query)]

    return run_db(read)


def list_breaks(url: str, since: datetime | None = None) -> list[BreakRow]:
    def read() -> list[BreakRow]:
        query = select(recon_breaks).order_by(recon_breaks.c.opened_at, recon_breaks.c.break_id)
        if since is not None:
            query = query.where(recon_breaks.c.opened_at >= since)
        with engine_for(url).connect() as conn:
            return [
                BreakRow(break_id=str(r.break_id), pairing=r.pairing, record_id=str(r.record_id),
                         source=r.source, reason=r.reason, currency=r.currency,
                         amount_sealed=bytes(r.amount_sealed) if r.amount_sealed is not None else None,
                         detail_sealed=bytes(r.detail_sealed) if r.detail_sealed is not None else None,
                         related_ids=tuple(str(i) for i in r.related_ids), opened_at=r.opened_at)
                for r in conn.execute(query)
            ]

    return run_db(read)


def list_discrepancies(url: str, pairing: str) -> list[BreakRow]:
    """One pairing's breaks without their sealed columns, oldest first: what the access
    service may read (migration 0011 grants it these columns only)."""
    columns = [recon_breaks.c[name] for name in ("break_id", "pairing", "record_id", "source", "reason",
                                                 "related_ids", "opened_at")]

    def read() -> list[BreakRow]:
        query = (select(*columns).where(recon_breaks.c.pairing == pairing)
                 .order_by(recon_breaks.c.opened_at, recon_breaks.c.break_id))
        with engine_for(url).connect() as conn:
            return [BreakRow(break_id=str(r.break_id), pairing=r.pairing, record_id=str(r.record_id),
                             source=r.source, reason=r.reason,
                             related_ids=tuple(str(i) for i in r.related_ids), opened_at=r.opened_at)
                    for r in conn.execute(query)]

    return run_db(read)


def get_match(url: str, match_id: str) -> MatchRow | None:
    def read() -> MatchRow | None:
        with engine_for(url).connect() as conn:
            row = conn.execute(select(recon_matches)
                               .where(recon_matches.c.match_id == uuid.UUID(match_id))).first()
        return _match_row(row) if row else None

    return run_db(read)


def decide_match(url: str, match_id: str, status: str, actor: str, reason: str,
                 allowed_from: Sequence[str]) -> MatchRow | None:
    """Set an analyst's decision when the match's status is one of ``allowed_from``.

    Returns the updated row, or None when no such match is in an allowed status (the
    conditional UPDATE makes two analysts deciding at once safe: one wins).
    """
    def write() -> MatchRow | None:
        with engine_for(url).begin() as conn:
            row = conn.execute(
                update(recon_matches)
                .where(recon_matches.c.match_id == uuid.UUID(match_id),
                       recon_matches.c.status.in_(list(allowed_from)))
                .values(status=status, decided_by=actor, decided_at=func.now(), decision_reason=reason)
                .returning(*recon_matches.c)
            ).first()
        return _match_row(row) if row else None

    return run_db(write)


def reconciled_ids(url: str, record_ids: Sequence[str]) -> set[str]:
    """Which of ``record_ids`` already sit in a stored match or break (any pairing).

    Asked only for records older than the matcher's memory (a redelivery of old records),
    so the array scans it needs stay off the common path.
    """
    if not record_ids:
        return set()
    ids = _uuids(record_ids)

    def read() -> set[str]:
        with engine_for(url).connect() as conn:
            found = set()
            for column in (recon_matches.c.left_ids, recon_matches.c.right_ids):
                rows = conn.execute(select(column).where(column.overlap(ids))).all()
                found |= {str(i) for r in rows for i in r[0]}
            query = select(recon_breaks.c.record_id).where(recon_breaks.c.record_id.in_(ids))
            rows = conn.execute(query).all()
            found |= {str(r.record_id) for r in rows}
        return found & {str(i) for i in ids}

    return run_db(read)
