"""``attest recon confirm / reject``: an analyst's decision on a match, audited.

The conditional update (``storage.reconciliation.decide_match``) makes two analysts deciding
at once safe: one wins, the other is told the match's current status. The audit record's id
is derived from the action and the match, so a repeated decision is one record.
"""

from __future__ import annotations

import uuid
from enum import StrEnum

from config.settings import Settings
from operations.errors import ActionRefused
from schemas.audit import AuditAction, AuditRecord, audit_id_for
from storage.reconciliation import MatchRow, decide_match, get_match
from streams.audit_publisher import publish_audit


class Decision(StrEnum):
    """An analyst's decision; its value is the match status it sets."""

    CONFIRMED = "confirmed"
    REJECTED = "rejected"


#: Per decision: its audit action and the statuses a match may have to take it (the last one
#: is the decision's own status, so deciding the same way twice is not an error).
_RULES: dict[Decision, tuple[AuditAction, tuple[str, ...]]] = {
    Decision.CONFIRMED: (AuditAction.RECON_CONFIRMED, ("suggested", "confirmed")),
    Decision.REJECTED: (AuditAction.RECON_REJECTED, ("suggested", "matched", "rejected")),
}


def decide(settings: Settings, match_id: str, decision: Decision, reason: str, actor: str) -> MatchRow:
    """Record ``actor``'s ``decision`` on the match and audit it; returns the updated match.

    Raises ``ActionRefused`` for an id that is not a UUID, an empty reason, an unknown match,
    or a match whose status does not allow this decision.
    """
    try:
        uuid.UUID(match_id)
    except ValueError:
        raise ActionRefused(f"{match_id!r} is not a match id (a UUID from `attest recon report`)") from None
    if not reason.strip():
        raise ActionRefused("--reason must say why")
    action, allowed = _RULES[decision]
    status = decision.value
    row = decide_match(settings.database_url, match_id, status, actor, reason, allowed)
    if row is None:
        current = get_match(settings.database_url, match_id)
        if current is None:
            raise ActionRefused(f"no match {match_id}")
        raise ActionRefused(f"match {match_id} is {current.status}; only a "
                            f"{' or '.join(allowed[:-1])} match can be {status}")
    publish_audit(settings, [AuditRecord(
        audit_id=audit_id_for(action, match_id), actor=actor, action=action, correlation_id=match_id,
        subject_ids=[*row.left_ids, *row.right_ids],
        detail={"match_id": match_id, "pairing": row.pairing, "stage": row.stage, "rule": row.rule,
                "score": row.score, "reason": reason},
    )])
    return row
