"""Showing a dead letter's payload: an audited act, never a side effect of looking.

A JWS signs but does not hide: a dead letter's bytes may carry restricted fields (accounts,
incomes) in clear. ``attest dlq show`` therefore prints what the letter is (reason, origin,
headers, the claimed JWS header, size and SHA-256) and prints the payload only through
``reveal_payload``, which records who looked, at which letter and why, before anything is
shown; if the record cannot be sent, nothing is shown.
"""

from __future__ import annotations

import hashlib

from config.settings import Settings
from operations.errors import ActionRefused, AuditUnavailable
from operations.operator_audit import operator_record
from schemas.audit import AuditAction
from streams.audit_publisher import publish_audit
from streams.dead_letters import StoredLetter
from streams.errors import BrokerUnavailable
from streams.topics import DEAD_LETTER


def letter_digest(letter: StoredLetter) -> str:
    return hashlib.sha256(letter.value).hexdigest()


def reveal_payload(settings: Settings, letter: StoredLetter, why: str, actor: str) -> bytes:
    """The letter's bytes, once ``dlq.payload_shown`` is on the audit topic."""
    if not why.strip():
        raise ActionRefused("--why must say why the payload is shown (it is audited)")
    position = f"{DEAD_LETTER.name(settings)}/{letter.partition}@{letter.offset}"
    try:
        publish_audit(settings, [operator_record(
            AuditAction.DLQ_PAYLOAD_SHOWN, position, actor,
            {"why": why[:500], "reason": letter.reason, "sha256": letter_digest(letter)})])
    except BrokerUnavailable as exc:
        raise AuditUnavailable(f"nothing was shown: the audit record could not be sent ({exc})") from None
    return letter.value
