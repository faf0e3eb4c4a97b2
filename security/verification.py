"""From raw Kafka bytes to a verified event or a rejection: the one path every topic uses.

``verify_event`` is pure: the key snapshot, the clock and the limits come in as arguments,
so every rule is tested with plain values and no broker. The order of the checks is part of
the contract: cheap structural checks first, the signature before the payload is trusted,
and the payload's claims (schema, source, the key's binding, time) only after the signature holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from protection.tiers import protection_catalog
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
    #: ``None`` turns the issued_at window off: only for an audited operator replay.
    max_clock_skew: timedelta | None
    accepted_types: frozenset[str]
    # Whether a plain token is acceptable is no policy of the caller's: it is the signing
    # key's ``encrypted_only`` flag in the registry, applied by ``security.nested.verify_message``
    # (a setting here let each process that built a policy decide differently: review finding).


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
    # Stored as timestamptz and read back in UTC: near year 1 or 9999 an offset pushes it
    # out of what Python can read back (a replay turns the window off, so check here).
    try:
        in_utc = parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError("issued_at is out of range") from None
    if not 1 < in_utc.year < 9999:
        raise ValueError("issued_at is out of range (years 2-9998)")
    return parsed


#: C0 controls but tab, newline and carriage return; DEL; lone UTF-16 surrogates. Postgres
#: refuses U+0000 in text and JSONB and a lone surrogate cannot be encoded at all, so one
#: such string would fail its whole batch; the others have no business in an event field.
_FORBIDDEN_CHARACTERS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def forbidden_character_field(value: Any, path: str = "") -> str | None:
    """The dotted path of the first string (or key) holding a forbidden character, or None.

    Names the field, never the value: rejection details end up in dead letters and the audit
    log, where protected plaintext must not.
    """
    if isinstance(value, str):
        return path or "(value)" if _FORBIDDEN_CHARACTERS.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if _FORBIDDEN_CHARACTERS.search(key):
                return f"{path or '(object)'} key"
            found = forbidden_character_field(item, where)
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = forbidden_character_field(item, f"{path}[{index}]")
            if found:
                return found
    return None


def freshness_reference(now: datetime, reached_broker_at: datetime | None) -> datetime:
    """The time issued_at is judged against: when the message reached the broker.

    Judging by the worker's clock at processing time turned every backlog older than the
    window (a worker outage, a deploy, a database outage that held the stream) into `stale`
    dead letters. The broker's timestamp says when the producer handed the event over. A
    timestamp in the future (a producer's CreateTime from a fast clock) is clamped to now.
    """
    if reached_broker_at is None:
        return now
    return min(reached_broker_at, now)


def event_department(typ: str, payload: dict[str, Any]) -> str | None:
    """The department or agency an event belongs to: its schema's department field.

    ``schemas/tiers.yaml`` names the field (``source`` for transactions and approvals,
    ``agency`` for documents); it is the same value the writer stores as the row's
    ``department``, which row-level security and the access policy filter on.
    """
    schema = protection_catalog().schemas.get(typ)
    value = payload.get(schema.department_field) if schema else None
    return value if isinstance(value, str) else None


def verify_event(
    raw: bytes,
    keys: KeySnapshot,
    now: datetime,
    policy: VerificationPolicy,
    *,
    reached_broker_at: datetime | None = None,
) -> VerifiedEvent:
    """Return the verified event or raise ``Rejection`` with the reason code and a detail.

    ``now`` judges the key (validity window, revocation); ``reached_broker_at``, the
    message's broker timestamp when known, judges issued_at (see ``freshness_reference``).
    """
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
    # Strict JSON refuses raw C0 controls inside strings (`malformed`), so a forbidden
    # character can only arrive as a \u escape or a raw DEL: the walk runs only then.
    maybe = b"\\u" in token.payload or b"\x7f" in token.payload
    forbidden = forbidden_character_field(payload) if maybe else None
    if forbidden:
        raise Rejection(
            RejectReason.SCHEMA_INVALID,
            f"{forbidden}: control characters (U+0000-U+001F but tab/newline/return, U+007F) "
            "and lone surrogates are not accepted",
        )
    errors = validation_errors(token.typ, payload)
    if errors:
        raise Rejection(RejectReason.SCHEMA_INVALID, "; ".join(errors[:3]))
    if payload["source"] != key.source:
        raise Rejection(
            RejectReason.SOURCE_MISMATCH,
            f"key {key.kid!r} signs for {key.source!r}, the event claims {payload['source']!r}",
        )
    if key.typs is not None or key.department is not None:
        out_of_scope = key.scope_reason(token.typ, event_department(token.typ, payload))
        if out_of_scope:
            raise Rejection(*out_of_scope)
    try:
        issued_at = parse_issued_at(payload["issued_at"])
    except ValueError as exc:
        raise Rejection(RejectReason.SCHEMA_INVALID, f"issued_at: {exc}") from None
    if policy.max_clock_skew is not None:
        reference = freshness_reference(now, reached_broker_at)
        skew = abs(reference - issued_at)
        if skew > policy.max_clock_skew:
            raise Rejection(
                RejectReason.STALE,
                f"issued_at {payload['issued_at']} is {int(skew.total_seconds())}s from the time "
                f"the message reached the broker (window {int(policy.max_clock_skew.total_seconds())}s)",
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
