"""Reads for operator commands (replay, dlq retry, status): positions, checkpoints, results.

Read-only; kept apart from the write paths in ``storage.events`` and ``audit.log``.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select

from storage.db import engine_for, run_db
from storage.inference_models import InferenceRow
from storage.models import AuditCheckpointRow, AuditLogRow, EventRow

#: (topic, partition, offset, SHA-256 of the message bytes or None for old rows)
Position = tuple[str, int, int, bytes | None]


def _uuids(event_ids: list[str]) -> list[uuid.UUID]:
    out = []
    for event_id in event_ids:
        try:
            out.append(uuid.UUID(event_id))
        except ValueError:
            continue
    return out


def event_positions(url: str, event_ids: list[str]) -> dict[str, Position]:
    """Where each stored event was read (ids that are not stored, or not UUIDs, are absent)."""
    ids = _uuids(event_ids)
    if not ids:
        return {}

    def read() -> dict[str, Position]:
        with engine_for(url).connect() as conn:
            rows = conn.execute(
                select(EventRow.event_id, EventRow.topic, EventRow.partition, EventRow.offset,
                       EventRow.message_sha256).where(EventRow.event_id.in_(ids))
            ).all()
        return {str(r.event_id): (r.topic, r.partition, r.offset,
                                  None if r.message_sha256 is None else bytes(r.message_sha256))
                for r in rows}

    return run_db(read)


def inferred_event_ids(url: str, event_ids: list[str], model_version: str | None = None) -> set[str]:
    """The events that already have an inference result (of ``model_version``, if given)."""
    ids = _uuids(event_ids)
    if not ids:
        return set()

    def read() -> set[str]:
        stmt = select(InferenceRow.event_id).where(InferenceRow.event_id.in_(ids)).distinct()
        if model_version is not None:
            stmt = stmt.where(InferenceRow.model_version == model_version)
        with engine_for(url).connect() as conn:
            return {str(r[0]) for r in conn.execute(stmt)}

    return run_db(read)


def newest_checkpoint(url: str) -> tuple[int, datetime] | None:
    """(last sequence number covered, when it was signed) of the newest audit checkpoint."""

    def read() -> tuple[int, datetime] | None:
        with engine_for(url).connect() as conn:
            row = conn.execute(
                select(AuditCheckpointRow.last_seq, AuditCheckpointRow.created_at)
                .order_by(AuditCheckpointRow.last_seq.desc()).limit(1)
            ).first()
        return (int(row.last_seq), row.created_at) if row else None

    return run_db(read)


def audit_rows(url: str) -> int:
    """Rows in the audit log (the chain's length)."""

    def read() -> int:
        with engine_for(url).connect() as conn:
            return int(conn.execute(select(func.coalesce(func.max(AuditLogRow.seq), 0))).scalar_one())

    return run_db(read)
