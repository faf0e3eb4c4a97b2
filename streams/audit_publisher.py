"""Publishing audit records from outside a worker (the CLI's key changes, replays, reads).

Every message is signed with the operator component's audit-signing key
(``Settings.audit_signer_key_path("operator")``, created 0600 on first use): the audit sink
chains only messages that verify against a registered signer (docs/audit.md).
"""

from __future__ import annotations

from audit.signer_keys import OPERATOR, signer_key
from audit.signing import sign_audit_message
from config.settings import Settings
from schemas.audit import AuditRecord
from streams.producer import OutgoingMessage, send_all
from streams.topics import AUDIT


def publish_audit(settings: Settings, records: list[AuditRecord], component: str = OPERATOR) -> None:
    """Sign each record with ``component``'s key, send it, and wait until the broker has it."""
    key = signer_key(settings, component)
    send_all(
        settings,
        AUDIT.name(settings),
        (
            OutgoingMessage(key=(r.correlation_id or r.audit_id).encode(),
                            value=sign_audit_message(key, r.to_bytes()))
            for r in records
        ),
    )
