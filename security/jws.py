"""Strict decoding of JWS compact tokens (RFC 7515) into their parts, with reason codes.

Decoding is hand-written on purpose: a JOSE library would tell us "invalid token", while the
dead-letter contract needs to say exactly which rule a message broke. Signing, which has no
such need, uses ``joserfc`` (see ``security.keyfiles``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from security.errors import Rejection
from security.reasons import RejectReason
from security.signatures import b64url_decode

MAX_HEADER_BYTES = 1024
_HEADER_MEMBERS = frozenset({"alg", "kid", "typ"})


@dataclass(frozen=True, slots=True)
class CompactToken:
    """The parts of a compact JWS, decoded but not yet verified."""

    alg: str
    kid: str
    typ: str
    payload: bytes
    signing_input: bytes
    signature: bytes


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate member {duplicate!r}")
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# One decoder for the process: ``json.loads`` with hooks would build a new one per call.
_STRICT_JSON = json.JSONDecoder(object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)


def parse_json_object(data: bytes, what: str) -> dict[str, Any]:
    """Strict JSON: UTF-8, one object, no duplicate members, no NaN/Infinity."""
    try:
        value = _STRICT_JSON.decode(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise Rejection(RejectReason.MALFORMED, f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise Rejection(RejectReason.MALFORMED, f"{what} is not a JSON object")
    return value


@lru_cache(maxsize=1024)
def _header(header_b64: bytes) -> tuple[str, str, str]:
    """(alg, kid, typ) of an encoded protected header.

    Cached because a producer sends the same header bytes with every event; only valid
    headers are cached (a rejection is an exception, which ``lru_cache`` does not keep).
    """
    try:
        header = parse_json_object(b64url_decode(header_b64), "protected header")
    except ValueError as exc:
        raise Rejection(RejectReason.MALFORMED, f"header is not base64url: {exc}") from None
    unknown = set(header) - _HEADER_MEMBERS
    if unknown:
        # crit, jku, jwk, x5u, b64... each one changes how a token must be checked; refuse them.
        raise Rejection(
            RejectReason.MALFORMED, f"unsupported header members: {', '.join(sorted(unknown))}"
        )
    for name in ("alg", "kid", "typ"):
        if not isinstance(header.get(name), str) or not header[name]:
            raise Rejection(RejectReason.MALFORMED, f"header member {name!r} must be a string")
    return header["alg"], header["kid"], header["typ"]


def decode_compact(raw: bytes, max_bytes: int) -> CompactToken:
    """Split and decode a token; raise ``Rejection`` (too_large or malformed) when it is not one."""
    if len(raw) > max_bytes:
        raise Rejection(RejectReason.TOO_LARGE, f"{len(raw)} bytes exceeds the {max_bytes} limit")
    parts = raw.split(b".")
    if len(parts) != 3:
        raise Rejection(
            RejectReason.MALFORMED, f"a compact JWS has 3 dot-separated parts, not {len(parts)}"
        )
    header_b64, payload_b64, signature_b64 = parts
    if len(header_b64) > MAX_HEADER_BYTES * 4 // 3 + 4:
        raise Rejection(RejectReason.MALFORMED, "protected header is too large")
    alg, kid, typ = _header(header_b64)
    try:
        payload = b64url_decode(payload_b64)
        signature = b64url_decode(signature_b64)
    except ValueError as exc:
        raise Rejection(RejectReason.MALFORMED, f"token part is not base64url: {exc}") from None
    return CompactToken(
        alg=alg,
        kid=kid,
        typ=typ,
        payload=payload,
        signing_input=raw[: len(raw) - len(signature_b64) - 1],  # one slice, no join
        signature=signature,
    )


_CLAIMED_ID = re.compile(rb'"event_id"\s*:\s*"([0-9A-Za-z-]{1,64})"')


def claimed_event_id(token: bytes) -> str | None:
    """The event_id a compact JWS claims, unverified, or None.

    A search of the decoded payload bytes: several times cheaper than parsing the JSON (a
    replay asks this of every message), and a tampered token that no longer parses as JSON
    still correlates with the event it pretended to be. For rejections and dead letters
    only; nothing may trust it.
    """
    parts = token.split(b".")
    if len(parts) != 3 or len(parts[1]) > 4 * 65536:
        return None
    try:
        payload = base64.urlsafe_b64decode(parts[1] + b"=" * (-len(parts[1]) % 4))
    except (binascii.Error, ValueError):
        return None
    found = _CLAIMED_ID.search(payload)
    return found.group(1).decode("ascii") if found else None
