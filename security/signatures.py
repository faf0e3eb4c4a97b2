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

_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())  # immutable; built once instead of per signature
_P256_ORDER = int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16)


def canonical_alg(alg: str) -> str:
    """The registry's name for ``alg`` (``EdDSA`` -> ``Ed25519``); raises when unsupported."""
    if alg in ED25519_ALGS:
        return "Ed25519"
    if alg == ES256:
        return ES256
    raise UnsupportedAlgorithm(f"algorithm {alg!r} is not accepted (only Ed25519, EdDSA, ES256)")


_URLSAFE_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_SEXTET = {c: i for i, c in enumerate(_URLSAFE_ALPHABET)}


def b64url_decode(text: str | bytes) -> bytes:
    """Strict base64url without padding (RFC 7515 section 2); raises ``ValueError``.

    Hand-rolled around ``binascii`` because this runs three times per event on the hot
    path, and because the standard library accepts what JWS forbids: padding, the ``+/``
    alphabet, and non-canonical encodings whose unused trailing bits are set.
    """
    raw = text.encode("ascii") if isinstance(text, str) else text
    if raw.translate(None, _URLSAFE_ALPHABET):
        raise ValueError("not base64url: characters outside the URL-safe alphabet")
    rem = len(raw) % 4
    if rem == 1:
        raise ValueError("not base64url: impossible length")
    # One token, one byte string: the bits after the last whole byte must be zero.
    if rem == 2 and _SEXTET[raw[-1]] & 0x0F or rem == 3 and _SEXTET[raw[-1]] & 0x03:
        raise ValueError("non-canonical base64url")
    padded = raw.translate(_TO_STANDARD) + b"=" * (-len(raw) % 4)
    try:
        return binascii.a2b_base64(padded, strict_mode=True)
    except binascii.Error as exc:
        raise ValueError(f"not base64url: {exc}") from None


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


@lru_cache(maxsize=4096)
def _load_public_key(alg: str, kty: object, crv: object, x: object, y: object) -> Any:
    """Parse a public JWK once; workers verify many events per key."""
    jwk = {"x": x, "y": y}
    if alg == "Ed25519":
        if kty != "OKP" or crv != "Ed25519":
            raise UnusableKey("an Ed25519 key must be an OKP JWK with crv Ed25519")
        return ed25519.Ed25519PublicKey.from_public_bytes(_jwk_member(jwk, "x", 32))
    if kty != "EC" or crv != "P-256":
        raise UnusableKey("an ES256 key must be an EC JWK with crv P-256")
    x_int = int.from_bytes(_jwk_member(jwk, "x", 32), "big")
    y_int = int.from_bytes(_jwk_member(jwk, "y", 32), "big")
    try:
        return ec.EllipticCurvePublicNumbers(x_int, y_int, ec.SECP256R1()).public_key()
    except ValueError as exc:
        raise UnusableKey("the EC point is not on P-256") from exc


def _key(alg: str, jwk: dict[str, Any]) -> Any:
    get = jwk.get
    try:
        return _load_public_key(alg, get("kty"), get("crv"), get("x"), get("y"))
    except TypeError:  # an unhashable member (a list, a dict): not a usable JWK
        raise UnusableKey("JWK members kty, crv, x, y must be strings") from None


def public_key_for(alg: str, jwk: dict[str, Any]) -> Any:
    """The ``cryptography`` public key object for a JWK under ``alg`` (cached)."""
    return _key(canonical_alg(alg), jwk)


def verify(alg: str, jwk: dict[str, Any], message: bytes, signature: bytes) -> bool:
    """True only for a valid signature of ``message`` by ``jwk`` under ``alg``.

    Returns False for any invalid signature (wrong length, bad encoding, out-of-range r or
    s). Raises ``UnsupportedAlgorithm`` for an algorithm outside Ed25519/EdDSA/ES256 and
    ``UnusableKey`` for a JWK that does not fit the algorithm.
    """
    return verify_canonical(canonical_alg(alg), jwk, message, signature)


def verify_canonical(name: str, jwk: dict[str, Any], message: bytes, signature: bytes) -> bool:
    """``verify`` for an algorithm name already passed through ``canonical_alg``."""
    key = _key(name, jwk)
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
        key.verify(encode_dss_signature(r, s), message, _ECDSA_SHA256)
    except InvalidSignature:
        return False
    return True
