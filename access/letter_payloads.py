"""Showing a dead letter's payload: a permission of the access service, audited before it answers.

A JWS signs but does not hide: a dead letter's bytes may carry any department's restricted
fields (an account, an income) in clear. Who may see them is therefore decided here, by the
service that authenticated the person, never by the client (``attest dlq show --payload`` only
asks). In order (``show_letter_payload``):

1. a stated purpose;
2. a token role that a loaded policy gives ``dead_letters.payload`` (``permissions`` in
   policies/*.yaml; 403 otherwise), checked before the broker is touched;
3. the letter at that position is read from the dead-letter topic (404 when there is none), so
   the record can name what is shown (its reason and SHA-256), as a field read fetches its rows
   before its record;
4. the ``dlq.payload_shown`` audit record (person, roles, purpose, letter, reason, SHA-256) is
   appended to the audit log and **committed**; if that fails, nothing is returned (503);
5. only then the letter's bytes are returned, as stored (a nested encrypted token stays
   encrypted: nothing is opened here).

A refusal of an authenticated person is recorded too (outcome ``rejected``), as for reads.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from access.errors import AccessError, AuditUnavailable, Forbidden, LettersUnavailable, NotFound
from access.identity import Identity
from access.policy import DEAD_LETTER_PAYLOAD
from access.service import AccessService, _safe_text
from config.settings import Settings
from schemas.audit import AuditAction, AuditRecord
from security.errors import Rejection
from security.jws import parse_json_object
from security.signatures import b64url_decode
from streams.dead_letters import StoredLetter
from streams.errors import BrokerUnavailable


@dataclass(frozen=True, slots=True)
class DeadLetters:
    """Where the service reads dead letters: the topic's name and a reader of one position."""

    topic: str
    find: Callable[[int, int], StoredLetter | None]


def dead_letters_of(settings: Settings) -> DeadLetters:
    """The dead-letter topic of ``settings``, read one position at a time."""
    from operations.letters import letter_at
    from streams.topics import DEAD_LETTER

    return DeadLetters(DEAD_LETTER.name(settings),
                       lambda partition, offset: letter_at(settings, partition, offset))


@dataclass(frozen=True, slots=True)
class ShownLetter:
    """A dead letter as the service hands it out, with the record that let it."""

    audit: AuditRecord
    topic: str
    letter: StoredLetter
    sha256: str


def show_letter_payload(service: AccessService, identity: Identity, partition: int, offset: int,
                        purpose: str) -> ShownLetter:
    """The letter at ``partition:offset``, once its ``dlq.payload_shown`` record is committed.

    Raises ``AccessError`` (400) without a purpose, ``Forbidden`` (403) without the permission,
    ``NotFound`` (404) when there is no letter there, ``LettersUnavailable`` (502) when the
    broker cannot be read, ``AuditUnavailable`` (503) when the record cannot be committed.
    """
    correlation = _position(service, partition, offset)
    try:
        return _show(service, identity, partition, offset, purpose, correlation)
    except AuditUnavailable:
        raise
    except AccessError as refusal:
        service._audit_refused(identity, AuditAction.DLQ_PAYLOAD_SHOWN, correlation, {
            "permission": DEAD_LETTER_PAYLOAD, "purpose": (purpose or "").strip(),
            "partition": partition, "offset": offset}, refusal)
        raise


def _position(service: AccessService, partition: int, offset: int) -> str:
    letters = service.dead_letters
    return f"{letters.topic if letters else '?'}/{partition}@{offset}"


def holders_of(service: AccessService, permission: str) -> frozenset[str]:
    """The token roles that any loaded policy gives ``permission``."""
    return frozenset().union(*(p.roles_with(permission) for p in service._policies))


def _show(service: AccessService, identity: Identity, partition: int, offset: int, purpose: str,
          correlation: str) -> ShownLetter:
    if not purpose or not purpose.strip():
        raise AccessError("showing a payload needs a stated purpose")
    held = holders_of(service, DEAD_LETTER_PAYLOAD) & identity.roles
    if not held:
        raise Forbidden(f"your token carries no role with permission {DEAD_LETTER_PAYLOAD!r}")
    letters = service.dead_letters
    if letters is None:
        raise LettersUnavailable("this access service reads no dead-letter topic")
    try:
        letter = letters.find(partition, offset)
    except BrokerUnavailable as exc:
        raise LettersUnavailable(f"the dead-letter topic cannot be read ({exc})") from None
    if letter is None:
        raise NotFound(f"no dead letter at {partition}:{offset}")
    digest = hashlib.sha256(letter.value).hexdigest()
    record = service._record(identity, AuditAction.DLQ_PAYLOAD_SHOWN, correlation, [correlation], {
        "permission": DEAD_LETTER_PAYLOAD, "roles": sorted(held),
        "department": identity.department, "purpose": purpose.strip(),
        # Headers are whoever produced the letter's words: escaped and cut, so a NUL or a control
        # character in one cannot make the record unwritable (and the letter unshowable).
        "reason": _safe_text(letter.reason), "origin": _safe_text(letter.origin),
        "bytes": len(letter.value),
        "sha256": digest,
    })
    service._audit(record)  # committed, or AuditUnavailable: nothing is returned
    return ShownLetter(record, letters.topic, letter, digest)


def claimed_parts(value: bytes) -> tuple[str, dict[str, Any] | None, dict[str, Any] | None]:
    """What the bytes claim to be, unverified, for a person to read: (form, header, payload).

    ``form`` is ``jws`` (compact JWS: its header and, when JSON, its payload), ``jwe`` (five
    parts: an encrypted token, returned as stored, nothing opened) or ``other``.
    """
    parts = value.split(b".")
    if len(parts) == 5:
        return "jwe", _json_part(parts[0]), None
    if len(parts) != 3:
        return "other", None, None
    return "jws", _json_part(parts[0]), _json_part(parts[1])


def _json_part(part: bytes) -> dict[str, Any] | None:
    try:
        return parse_json_object(b64url_decode(part), "part")
    except (ValueError, Rejection):
        return None


def as_json(shown: ShownLetter) -> dict[str, Any]:
    """The wire form (``DeadLetterPayloadOut`` in access/app.py)."""
    letter = shown.letter
    form, header, payload = claimed_parts(letter.value)
    return {
        "audit_id": shown.audit.audit_id, "topic": shown.topic, "partition": letter.partition,
        "offset": letter.offset, "reason": letter.reason, "origin": letter.origin,
        "headers": dict(letter.headers),
        "key": base64.b64encode(letter.key).decode("ascii") if letter.key is not None else None,
        "bytes": len(letter.value), "sha256": shown.sha256, "form": form, "header": header,
        "payload": payload, "value": base64.b64encode(letter.value).decode("ascii"),
    }

