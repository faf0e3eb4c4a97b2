"""The audit sink: audit topic -> append-only ``audit_log`` table, idempotent on audit_id."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import ValidationError

from agents.messages import BatchOutput, DeadLetter, IncomingMessage
from agents.retry import until_stored
from config.settings import Settings
from schemas.audit import AuditRecord
from security.reasons import RejectReason
from storage.audit import append_records


class AuditSink:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def process(self, batch: list[IncomingMessage]) -> BatchOutput:
        """Store every parseable record; an unparseable one is dead-lettered, not dropped."""
        records: list[AuditRecord] = []
        output = BatchOutput()
        for message in batch:
            try:
                records.append(AuditRecord.from_bytes(message.value))
            except ValidationError as exc:
                output.dead_letters.append(
                    DeadLetter(message, RejectReason.MALFORMED.value,
                               f"not an attest.audit.v1 record: {exc.error_count()} errors",
                               datetime.now(UTC))
                )
        url = self._settings.database_url
        output.stored = await until_stored(
            lambda: append_records(url, records), self._settings.db_retry_max_s,
            "appending audit records",
        )
        return output
