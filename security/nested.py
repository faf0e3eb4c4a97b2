"""Nested JWT on the wire: a JWS signed by the producer, then JWE-encrypted to Attest's intake key.

A JWS signs but does not hide: a plain token keeps every restricted field (accounts,
income) readable on the intake topic for its whole retention. A producer may therefore send
``JWE(JWS)`` (RFC 7516 compact, RFC 7519 section 5.2 ``cty: JWT``), with exactly one
algorithm pair, ECDH-ES+A256KW and A256GCM, to an intake key Attest holds
(``security.intake_keys``). The JWE is opened here and its plaintext, the usual signed JWS,
goes through ``security.verification.verify_event`` unchanged.

The JWE header is decoded by hand for the same reason as the JWS one (``security.jws``): the
dead-letter contract names the exact rule a message broke. joserfc does the cryptography,
with the algorithms pinned, only after the header has passed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from security.errors import Rejection, UnusableKey
from security.intake_keys import CURVE, JWE_ALG, JWE_ENC, IntakeKey
from security.jws import MAX_HEADER_BYTES, parse_json_object
from security.reasons import RejectReason
from security.registry import KeySnapshot
from security.signatures import b64url_decode
from security.verification import VerificationPolicy, VerifiedEvent, verify_event

CONTENT_TYPE = "JWT"
#: ``epk`` is the sender's ephemeral key (RFC 7518 4.6.1.1); ``apu``/``apv`` only feed the
#: key derivation. Everything else is refused: ``zip`` (compression before encryption leaks
#: length, and a small token may inflate hugely), ``jku``/``jwk``/``x5u``/``x5c`` (the
#: sender would choose the key), ``crit`` (extensions we do not implement), ``typ``.
_REQUIRED_MEMBERS = ("alg", "enc", "cty", "kid", "epk")
_HEADER_MEMBERS = frozenset({*_REQUIRED_MEMBERS, "apu", "apv"})
_EPK_MEMBERS = frozenset({"kty", "crv", "x", "y"})
#: Decoded sizes of the other four parts: the AES key wrap of a 256-bit content key, the
#: 96-bit GCM nonce, the 128-bit tag. The ciphertext may have any length.
_WRAPPED_KEY_BYTES, _IV_BYTES, _TAG_BYTES = 40, 12, 16
_PINNED = [JWE_ALG, JWE_ENC]


class IntakeKeys(Protocol):
    """Whatever holds the intake keys (``IntakeKeySet``, ``HeldIntakeKeys``)."""

    def get(self, kid: str) -> IntakeKey | None: ...


def is_nested(raw: bytes) -> bool:
    """Whether ``raw`` has the shape of a compact JWE (five parts) rather than a JWS (three)."""
    return raw.count(b".") == 4


def _jwe_header(header_b64: bytes) -> dict[str, Any]:
    if len(header_b64) > MAX_HEADER_BYTES * 4 // 3 + 4:
        raise Rejection(RejectReason.MALFORMED, "JWE protected header is too large")
    try:
        header = parse_json_object(b64url_decode(header_b64), "JWE protected header")
    except ValueError as exc:
        raise Rejection(RejectReason.MALFORMED, f"JWE header is not base64url: {exc}") from None
    unknown = set(header) - _HEADER_MEMBERS
    if unknown:
        raise Rejection(RejectReason.MALFORMED,
                        f"unsupported JWE header members: {', '.join(sorted(unknown))[:200]}")
    missing = [name for name in _REQUIRED_MEMBERS if name not in header]
    if missing:
        raise Rejection(RejectReason.MALFORMED, f"JWE header lacks {', '.join(missing)}")
    if header["alg"] != JWE_ALG or header["enc"] != JWE_ENC:
        raise Rejection(
            RejectReason.ALG_MISMATCH,
            f"JWE alg {str(header['alg'])[:32]!r} / enc {str(header['enc'])[:32]!r} is never "
            f"accepted ({JWE_ALG} with {JWE_ENC} only)",
        )
    if header["cty"] != CONTENT_TYPE:
        raise Rejection(RejectReason.MALFORMED,
                        f"JWE cty must be {CONTENT_TYPE!r} (a signed JWT inside), "
                        f"not {str(header['cty'])[:32]!r}")
    if not isinstance(header["kid"], str) or not header["kid"]:
        raise Rejection(RejectReason.MALFORMED, "JWE header member 'kid' must be a string")
    epk = header["epk"]
    if (not isinstance(epk, dict) or set(epk) != _EPK_MEMBERS or epk["kty"] != "EC"
            or epk["crv"] != CURVE or not all(isinstance(epk[m], str) for m in ("x", "y"))):
        raise Rejection(RejectReason.MALFORMED,
                        f"JWE epk must be a public {CURVE} JWK (kty, crv, x, y only)")
    for name in ("apu", "apv"):
        if name in header and not isinstance(header[name], str):
            raise Rejection(RejectReason.MALFORMED, f"JWE header member {name!r} must be a string")
    return header


def _check_part(part: bytes, name: str, size: int | None) -> None:
    try:
        decoded = b64url_decode(part)
    except ValueError as exc:
        raise Rejection(RejectReason.MALFORMED, f"JWE {name} is not base64url: {exc}") from None
    if size is not None and len(decoded) != size:
        raise Rejection(RejectReason.MALFORMED,
                        f"JWE {name} has {len(decoded)} bytes, not {size}")
    if size is None and not decoded:
        raise Rejection(RejectReason.MALFORMED, f"JWE {name} is empty")


def open_nested(raw: bytes, intake_keys: IntakeKeys, max_bytes: int) -> bytes:
    """The inner JWS of a nested token, or ``Rejection`` saying which rule it broke.

    Order: size of the outer bytes (``too_large``), five base64url parts and a header of
    exactly the members above (``malformed``), alg and enc (``alg_mismatch``), the part
    sizes (``malformed``), a held ``kid`` and the decryption itself (``undecryptable``).
    """
    if len(raw) > max_bytes:
        raise Rejection(RejectReason.TOO_LARGE, f"{len(raw)} bytes exceeds the {max_bytes} limit")
    parts = raw.split(b".")
    if len(parts) != 5:
        raise Rejection(RejectReason.MALFORMED,
                        f"a compact JWE has 5 dot-separated parts, not {len(parts)}")
    header = _jwe_header(parts[0])
    for part, name, size in zip(parts[1:], ("encrypted key", "iv", "ciphertext", "tag"),
                                (_WRAPPED_KEY_BYTES, _IV_BYTES, None, _TAG_BYTES), strict=True):
        _check_part(part, name, size)
    key = intake_keys.get(header["kid"])
    if key is None:
        raise Rejection(RejectReason.UNDECRYPTABLE,
                        f"no intake key held has kid {header['kid'][:80]!r}")
    try:
        opened = jwe.decrypt_compact(raw, key.private_key(), algorithms=_PINNED)
    except (JoseError, InvalidTag, ValueError) as exc:
        raise Rejection(RejectReason.UNDECRYPTABLE,
                        f"does not decrypt with intake key {key.kid!r}: {type(exc).__name__}") from None
    plaintext = opened.plaintext
    if plaintext is None:
        raise Rejection(RejectReason.UNDECRYPTABLE, "the JWE has no plaintext")
    return plaintext


def verify_message(
    raw: bytes,
    keys: KeySnapshot,
    intake_keys: IntakeKeys,
    now: datetime,
    policy: VerificationPolicy,
    *,
    reached_broker_at: datetime | None = None,
) -> tuple[VerifiedEvent, bool]:
    """Verify a Kafka value that is a JWS or a nested JWE(JWS); (event, whether encrypted).

    A plain JWS signed by a key registered ``encrypted_only`` is refused as
    ``encryption_required``, after its signature held (the reason then speaks for the real
    key, not for whoever typed its kid). The rule is the registry's, in ``keys``: every path
    that verifies (the worker, ``attest replay``, ``attest dlq retry``) decides alike.
    """
    if is_nested(raw):
        inner = open_nested(raw, intake_keys, policy.max_event_bytes)
        return verify_event(inner, keys, now, policy, reached_broker_at=reached_broker_at), True
    event = verify_event(raw, keys, now, policy, reached_broker_at=reached_broker_at)
    refused = keys[event.kid].plain_token_reason()
    if refused:
        raise Rejection(*refused)
    return event, False


def inner_token(raw: bytes, intake_keys: IntakeKeys, max_bytes: int) -> bytes | None:
    """The JWS inside a nested token, or ``raw`` itself for a plain one; None if unopenable.

    For the readers that only need what the message says (an event id to correlate a
    rejection, the stored form for enrichment), never for a decision.
    """
    if not is_nested(raw):
        return raw
    try:
        return open_nested(raw, intake_keys, max_bytes)
    except Rejection:
        return None


def seal_for_intake(token: bytes, intake_jwk: dict[str, Any]) -> bytes:
    """Encrypt a signed compact JWS to an intake public key: what a producer sends.

    ``intake_jwk`` is the public JWK ``attest keys intake-key public`` prints.
    """
    if intake_jwk.get("kty") != "EC" or intake_jwk.get("crv") != CURVE or "d" in intake_jwk:
        raise UnusableKey(f"an intake key is a public {CURVE} JWK")
    kid = intake_jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise UnusableKey("the intake key has no kid")
    try:
        public = ECKey.import_key({k: intake_jwk[k] for k in ("kty", "crv", "x", "y")})
    except (JoseError, ValueError, KeyError) as exc:
        raise UnusableKey(f"the intake key is not usable: {exc}") from None
    header = {"alg": JWE_ALG, "enc": JWE_ENC, "cty": CONTENT_TYPE, "kid": kid}
    return jwe.encrypt_compact(header, token, public, algorithms=_PINNED).encode("ascii")
