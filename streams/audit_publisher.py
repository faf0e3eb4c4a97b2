"""Publishing audit records from outside a worker (the CLI's key changes, replays, reads)."""

from __future__ import annotations

from config.settings import Settings
from schemas.audit import AuditRecord
from streams.producer import OutgoingMessage, send_all
from streams.topics import AUDIT


def publish_audit(settings: Settings, records: list[AuditRecord]) -> None:
    """Send records to the audit topic and wait until the broker has them."""
    send_all(
        settings,
        AUDIT.name(settings),
        (
            OutgoingMessage(key=(r.correlation_id or r.audit_id).encode(), value=r.to_bytes())
            for r in records
        ),
    )
