"""The audit record of one operator action (a key created, rotated, a subject forgotten).

One helper so that every operator action is recorded the same way: who (the CLI passes the
operator), what, one correlation id, and a detail without key material or identifiers.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from schemas.audit import AuditAction, AuditRecord, audit_id_for


def operator_record(
    action: AuditAction, correlation: str, actor: str, detail: dict[str, object],
    subject_ids: Sequence[str] | None = None,
) -> AuditRecord:
    """A record of ``action`` by ``actor``; its id includes the time, so a second run is a second record."""
    return AuditRecord(
        audit_id=audit_id_for(action, correlation, datetime.now(UTC).isoformat()),
        actor=actor, action=action, correlation_id=correlation,
        subject_ids=[correlation] if subject_ids is None else list(subject_ids),
        detail=detail,
    )
