"""The signature primitive: one function, strict about algorithms and encodings.

``verify`` is the only place that turns a JWK and a signature into a yes/no answer. It is
written on ``cryptography`` directly instead of a JOSE library because the JWS layer above it
must map every failure to a stable reason code, and because the decode+verify path is the
hot loop of every worker (see ``attest bench verify``).
"""

from __future__ import annotations

import base64
import binascii
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from security.errors import UnsupportedAlgorithm, UnusableKey

#: RFC 9864 names first; ``EdDSA`` is the older, still-common name for the same thing.
ED25519_ALGS = frozenset({"Ed25519", "EdDSA"})
ES256 = "ES256"
SUPPORTED_ALGS = ED25519_ALGS | {ES256}

_P256_ORDER = int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16)


def canonical_alg(alg: str) -> str:
    """The registry's name for ``alg`` (``EdDSA`` -> ``Ed25519``); raises when unsupported."""
    if alg in ED25519_ALGS:
        return "Ed25519"
    if alg == ES256:
        return ES256
    raise UnsupportedAlgorithm(f"algorithm {alg!r} is not accepted (only Ed25519, EdDSA, ES256)")


def b64url_decode(text: str | bytes) -> bytes:
    """Strict base64url without padding (RFC 7515 section 2); raises ``ValueError``."""
    raw = text.encode("ascii") if isinstance(text, str) else text
    if b"=" in raw or len(raw) % 4 == 1:
        raise ValueError("not unpadded base64url")
    try:
        decoded = base64.b64decode(raw + b"=" * (-len(raw) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc
    # Reject non-canonical encodings (trailing bits set): one token, one byte string.
    if base64.urlsafe_b64encode(decoded).rstrip(b"=") != raw:
        raise ValueError("non-canonical base64url")
    return decoded


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _jwk_member(jwk: dict[str, Any], name: str, size: int) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise UnusableKey(f"JWK member {name!r} is missing")
    try:
        raw = b64url_decode(value)
    except ValueError as exc:
        raise UnusableKey(f"JWK member {name!r} is not base64url") from exc
    if len(raw) != size:
        raise UnusableKey(f"JWK member {name!r} has {len(raw)} bytes, expected {size}")
    return raw


def _freeze(jwk: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in jwk.items() if k in ("kty", "crv", "x", "y")
                        and isinstance(v, str)))


@lru_cache(maxsize=4096)
def _load_public_key(alg: str, frozen: tuple[tuple[str, str], ...]) -> Any:
    """Parse a public JWK once; workers verify many events per key."""
    jwk = dict(frozen)
    if alg == "Ed25519":
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            raise UnusableKey("an Ed25519 key must be an OKP JWK with crv Ed25519")
        return ed25519.Ed25519PublicKey.from_public_bytes(_jwk_member(jwk, "x", 32))
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise UnusableKey("an ES256 key must be an EC JWK with crv P-256")
    x = int.from_bytes(_jwk_member(jwk, "x", 32), "big")
    y = int.from_bytes(_jwk_member(jwk, "y", 32), "big")
    try:
        return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    except ValueError as exc:
        raise UnusableKey("the EC point is not on P-256") from exc


def public_key_for(alg: str, jwk: dict[str, Any]) -> Any:
    """The ``cryptography`` public key object for a JWK under ``alg`` (cached)."""
    return _load_public_key(canonical_alg(alg), _freeze(jwk))


def verify(alg: str, jwk: dict[str, Any], message: bytes, signature: bytes) -> bool:
    """True only for a valid signature of ``message`` by ``jwk`` under ``alg``.

    Returns False for any invalid signature (wrong length, bad encoding, out-of-range r or
    s). Raises ``UnsupportedAlgorithm`` for an algorithm outside Ed25519/EdDSA/ES256 and
    ``UnusableKey`` for a JWK that does not fit the algorithm.
    """
    name = canonical_alg(alg)
    key = _load_public_key(name, _freeze(jwk))
    if name == "Ed25519":
        if len(signature) != 64:
            return False
        try:
            key.verify(signature, message)
        except InvalidSignature:
            return False
        return True
    # ES256: exactly 64 raw bytes r||s (RFC 7518 section 3.4); DER or other lengths are invalid.
    if len(signature) != 64:
        return False
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    if not (0 < r < _P256_ORDER and 0 < s < _P256_ORDER):
        return False
    try:
        key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True
