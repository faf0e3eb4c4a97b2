"""The audit log table: idempotent appends from the audit sink, and the read side."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert

from schemas.audit import AuditRecord
from storage.db import engine_for, run_db
from storage.models import AuditLogRow


def append_records(url: str, records: list[AuditRecord]) -> int:
    """Append in one transaction; a record already stored (same audit_id) is skipped."""
    if not records:
        return 0
    rows = [r.model_dump() for r in records]

    def write() -> int:
        with engine_for(url).begin() as conn:
            stmt = (
                insert(AuditLogRow).values(rows)
                .on_conflict_do_nothing(index_elements=["audit_id"])
                .returning(AuditLogRow.seq)
            )
            return len(conn.execute(stmt).all())

    return run_db(write)


@dataclass(frozen=True)
class DecisionCounts:
    """Per-run decision totals for the demo summary and the integration tests."""

    accepted: int
    rejected: Counter[str]
    audit_records: int

    @property
    def decided(self) -> int:
        return self.accepted + sum(self.rejected.values())


def decision_counts(url: str, since: datetime | None = None) -> DecisionCounts:
    """Accepted and rejected-by-reason counts from the audit log (optionally since a time)."""

    def read() -> DecisionCounts:
        where = []
        if since is not None:
            where.append(AuditLogRow.time >= since)
        with engine_for(url).connect() as conn:
            rows = conn.execute(
                select(AuditLogRow.action, AuditLogRow.reason, func.count())
                .where(*where)
                .group_by(AuditLogRow.action, AuditLogRow.reason)
            ).all()
        accepted = sum(n for action, _, n in rows if action == "event.accepted")
        rejected: Counter[str] = Counter()
        for action, reason, n in rows:
            if action == "event.rejected":
                rejected[reason or "unknown"] += n
        return DecisionCounts(accepted, rejected, sum(n for _, _, n in rows))

    return run_db(read)


def find_records(
    url: str,
    *,
    correlation_ids: list[str] | None = None,
    action: str | None = None,
    since: datetime | None = None,
    limit: int = 1000,
) -> list[AuditRecord]:
    """Audit records in append order, filtered; the read side for the CLI and tests."""

    def read() -> list[AuditRecord]:
        stmt = select(AuditLogRow).order_by(AuditLogRow.seq).limit(limit)
        if correlation_ids is not None:
            stmt = stmt.where(AuditLogRow.correlation_id.in_(correlation_ids))
        if action is not None:
            stmt = stmt.where(AuditLogRow.action == action)
        if since is not None:
            stmt = stmt.where(AuditLogRow.time >= since)
        with engine_for(url).connect() as conn:
            rows = conn.execute(stmt).all()
        fields = AuditRecord.model_fields
        return [
            AuditRecord.model_validate({
                k: (str(v) if k == "audit_id" else v)
                for k, v in row._mapping.items() if k in fields
            })
            for row in rows
        ]

    return run_db(read)
