"""Signed audit messages: what an emitter puts on the audit topic and what the sink accepts.

Anyone who can write ``attest.audit`` could once have records chained as genuine (issue 14,
item 4). Now every message value on the topic is a JWS compact serialization (RFC 7515):

* protected header exactly ``{"alg": "Ed25519", "kid": ..., "typ": "attest-audit+jws"}``:
  the algorithm is pinned (no ``EdDSA`` alias, no ES256, never ``none``), the typ keeps an
  audit signature from being mistaken for an event signature and the other way round;
* payload: the message as it was before signing, one ``attest.audit.v1`` record or a batch
  ``{"records": [...]}`` (``schemas.audit.records_in``).

One signature per message, and a worker's message already carries up to ``AUDIT_BATCH_MAX``
records: signing is per batch where the volume is (docs/performance.md has the numbers).

The sink verifies against the registered signers (``audit.signers``) before it parses a
record: unsigned, unknown kid, revoked, bad signature, or a record whose actor the key may
not speak for, and the whole message is refused. Pure functions: tested without a broker.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from audit.errors import ForgedAudit
from schemas.audit import AuditRecord
from security.errors import Rejection, UnusableKey
from security.jws import decode_compact
from security.keyfiles import SigningKey
from security.reasons import RejectReason
from security.signatures import verify_canonical

#: The ``typ`` of a signed audit message (RFC 8725 section 3.11: explicit typing).
AUDIT_JWS_TYP = "attest-audit+jws"
#: The one algorithm of audit-signing keys.
AUDIT_JWS_ALG = "Ed25519"
#: Largest signed message the sink decodes: a batch of ``AUDIT_BATCH_MAX`` records stays far
#: below Kafka's 1 MiB default; base64 adds a third.
MAX_SIGNED_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class AuditSigner:
    """A registered audit-signing key: which component holds it, whom it may speak for."""

    kid: str
    component: str
    public_jwk: dict[str, Any]
    #: Actor patterns: ``worker:*`` (a prefix, ending in ``*``) or an exact actor.
    actors: tuple[str, ...]
    revoked_at: datetime | None = None


def may_speak_for(patterns: Iterable[str], actor: str) -> bool:
    """Whether a key allowed ``patterns`` may sign a record by ``actor``.

    A pattern ending in ``*`` matches every actor starting with what precedes it; any other
    pattern only itself. Deliberately not ``fnmatch``: ``[``, ``?`` in an actor mean nothing.
    """
    for pattern in patterns:
        if pattern.endswith("*"):
            if actor.startswith(pattern[:-1]):
                return True
        elif actor == pattern:
            return True
    return False


def sign_audit_message(key: SigningKey, value: bytes) -> bytes:
    """The audit-topic message value for ``value`` (a record or a batch), signed by ``key``."""
    if key.alg != AUDIT_JWS_ALG:
        raise UnusableKey(f"an audit-signing key must be {AUDIT_JWS_ALG}, not {key.alg}")
    return key.sign(value, AUDIT_JWS_TYP, AUDIT_JWS_ALG)


@dataclass(frozen=True)
class VerifiedMessage:
    """A message whose signature holds: its payload (the unsigned value) and its signer."""

    payload: bytes
    signer: AuditSigner


def looks_signed(value: bytes) -> bool:
    """A cheap test: a JWS compact value starts with base64url, never with ``{``."""
    return not value[:16].lstrip().startswith(b"{")


def verify_audit_message(value: bytes, signers: Mapping[str, AuditSigner]) -> VerifiedMessage:
    """The payload of a signed audit message and who signed it; ``ForgedAudit`` otherwise.

    Checks, in order: a JWS at all, the pinned ``typ`` and ``alg``, a registered ``kid``,
    not revoked, the signature. Whom the key may speak for is checked per record after
    parsing (``check_actors``).
    """
    if not looks_signed(value):
        raise ForgedAudit("unsigned", RejectReason.MALFORMED,
                          f"an unsigned audit message: the audit topic takes only {AUDIT_JWS_TYP}")
    try:
        token = decode_compact(value, MAX_SIGNED_BYTES)
    except Rejection as exc:
        raise ForgedAudit("unsigned", exc.reason, f"not a signed audit message: {exc.detail}") from None
    kid = token.kid[:200]
    if token.typ != AUDIT_JWS_TYP:
        raise ForgedAudit("wrong_typ", RejectReason.MALFORMED,
                          f"typ {token.typ[:64]!r} is not {AUDIT_JWS_TYP}", kid)
    if token.alg != AUDIT_JWS_ALG:
        raise ForgedAudit("alg_not_allowed", RejectReason.ALG_MISMATCH,
                          f"alg {token.alg[:32]!r}: audit messages are signed with {AUDIT_JWS_ALG} only",
                          kid)
    signer = signers.get(token.kid)
    if signer is None:
        raise ForgedAudit("unknown_signer", RejectReason.UNKNOWN_KEY,
                          f"kid {kid!r} is not a registered audit signer", kid)
    if signer.revoked_at is not None:
        raise ForgedAudit("revoked_signer", RejectReason.REVOKED_KEY,
                          f"audit signer {kid!r} was revoked at {signer.revoked_at.isoformat()}", kid)
    try:
        valid = verify_canonical(AUDIT_JWS_ALG, signer.public_jwk, token.signing_input, token.signature)
    except UnusableKey as exc:  # a registration that no longer loads: refuse, never crash
        raise ForgedAudit("bad_signature", RejectReason.BAD_SIGNATURE,
                          f"audit signer {kid!r} has an unusable key: {exc}", kid) from None
    if not valid:
        raise ForgedAudit("bad_signature", RejectReason.BAD_SIGNATURE,
                          f"the signature does not verify with audit signer {kid!r}", kid)
    return VerifiedMessage(token.payload, signer)


def check_actors(records: Iterable[AuditRecord], signer: AuditSigner) -> None:
    """``ForgedAudit`` when a record's actor is not one ``signer`` may speak for."""
    for index, record in enumerate(records):
        if not may_speak_for(signer.actors, record.actor):
            raise ForgedAudit(
                "actor_not_allowed", RejectReason.SCOPE_MISMATCH,
                f"record #{index}: audit signer {signer.kid[:200]!r} ({signer.component[:64]}) may "
                f"not speak for actor {record.actor[:80]!r}", signer.kid[:200])


def unsigned_payload(value: bytes) -> bytes:
    """The payload of a signed message *without verifying it*, or the value itself.

    For readers that display or look up (``attest audit tail``, the published checkpoint,
    which carries its own signature); never for deciding what is genuine.
    """
    if not looks_signed(value):
        return value
    try:
        return decode_compact(value, MAX_SIGNED_BYTES).payload
    except Rejection:
        return value
