"""From raw Kafka bytes to a verified event or a rejection: the one path every topic uses.

``verify_event`` is pure: the key snapshot, the clock and the limits come in as arguments,
so every rule is tested with plain values and no broker. The order of the checks is part of
the contract: cheap structural checks first, the signature before the payload is trusted,
and the payload's claims (schema, source, time) only after the signature holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from schemas.catalog import validation_errors
from security.errors import Rejection, UnsupportedAlgorithm, UnusableKey
from security.jws import decode_compact, parse_json_object
from security.reasons import RejectReason
from security.registry import KeySnapshot
from security.signatures import canonical_alg, verify_canonical


@dataclass(frozen=True, slots=True)
class VerificationPolicy:
    """The limits a verifier applies; built from ``Settings`` by the caller."""

    max_event_bytes: int
    max_clock_skew: timedelta
    accepted_types: frozenset[str]


@dataclass(frozen=True, slots=True)
class VerifiedEvent:
    """An event whose signature, key, schema, source and time all checked out."""

    event_id: str
    source: str
    kid: str
    alg: str
    typ: str
    issued_at: datetime
    payload: dict[str, Any]


def parse_issued_at(value: str) -> datetime:
    """RFC 3339 with an explicit offset; raises ``ValueError`` otherwise."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("issued_at needs a time zone offset")
    return parsed


def verify_event(
    raw: bytes, keys: KeySnapshot, now: datetime, policy: VerificationPolicy
) -> VerifiedEvent:
    """Return the verified event or raise ``Rejection`` with the reason code and a detail."""
    token = decode_compact(raw, policy.max_event_bytes)
    try:
        alg = canonical_alg(token.alg)
    except UnsupportedAlgorithm:
        raise Rejection(
            RejectReason.ALG_MISMATCH,
            f"algorithm {token.alg[:32]!r} is never accepted (Ed25519, EdDSA or ES256 only)",
        ) from None
    key = keys.get(token.kid)
    if key is None:
        raise Rejection(RejectReason.UNKNOWN_KEY, f"no registered key has kid {token.kid[:80]!r}")
    if key.alg != alg:
        raise Rejection(
            RejectReason.ALG_MISMATCH,
            f"key {key.kid!r} is registered for {key.alg}, the token says {token.alg}",
        )
    unusable = key.unusable_reason(now)
    if unusable:
        raise Rejection(*unusable)
    try:
        valid = verify_canonical(alg, key.public_jwk, token.signing_input, token.signature)
    except UnusableKey as exc:
        raise Rejection(RejectReason.UNKNOWN_KEY, f"registered key is unusable: {exc}") from None
    if not valid:
        raise Rejection(RejectReason.BAD_SIGNATURE, f"signature does not verify with {key.kid!r}")

    payload = parse_json_object(token.payload, "payload")
    if token.typ not in policy.accepted_types:
        raise Rejection(
            RejectReason.SCHEMA_INVALID, f"typ {token.typ[:64]!r} is not accepted on this topic"
        )
    errors = validation_errors(token.typ, payload)
    if errors:
        raise Rejection(RejectReason.SCHEMA_INVALID, "; ".join(errors[:3]))
    if payload["source"] != key.source:
        raise Rejection(
            RejectReason.SOURCE_MISMATCH,
            f"key {key.kid!r} signs for {key.source!r}, the event claims {payload['source']!r}",
        )
    try:
        issued_at = parse_issued_at(payload["issued_at"])
    except ValueError as exc:
        raise Rejection(RejectReason.SCHEMA_INVALID, f"issued_at: {exc}") from None
    skew = abs(now - issued_at)
    if skew > policy.max_clock_skew:
        raise Rejection(
            RejectReason.STALE,
            f"issued_at {payload['issued_at']} is {int(skew.total_seconds())}s from now "
            f"(window {int(policy.max_clock_skew.total_seconds())}s)",
        )
    return VerifiedEvent(
        event_id=payload["event_id"],
        source=key.source,
        kid=key.kid,
        alg=alg,
        typ=token.typ,
        issued_at=issued_at,
        payload=payload,
    )
