"""Hand-built compact JWS tokens for hostile cases.

The product signs through ``SigningKey.sign`` (joserfc), which refuses to write a bad
header; these build any header, any payload bytes and any signature, and still sign the
signing input properly with a registered key when asked, so a verifier sees exactly the one
defect a test is about.
"""

from __future__ import annotations

import json
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from security.keyfiles import SigningKey
from security.signatures import b64url_decode, b64url_encode

#: A stand-in signature (base64url ``c2ln``): the shape of one, verifying nothing.
PLACEHOLDER_SIGNATURE = b"sig"

Part = dict[str, Any] | str | bytes


def b64(data: bytes) -> bytes:
    """Unpadded base64url, as bytes."""
    return b64url_encode(data).encode("ascii")


def part_bytes(part: Part) -> bytes:
    """A header or payload as JSON bytes: a dict is dumped, text encoded, bytes kept as given."""
    if isinstance(part, bytes):
        return part
    if isinstance(part, str):
        return part.encode("utf-8")
    return json.dumps(part).encode("utf-8")


def raw_signature(key: SigningKey, message: bytes) -> bytes:
    """``key``'s JWS signature over ``message`` (Ed25519, or ES256 as r || s)."""
    d = b64url_decode(key._private_jwk["d"])
    if key.alg == "Ed25519":
        return ed25519.Ed25519PrivateKey.from_private_bytes(d).sign(message)
    private = ec.derive_private_key(int.from_bytes(d, "big"), ec.SECP256R1())
    r, s = decode_dss_signature(private.sign(message, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def token(header: Part, payload: Part, signature: bytes | None = None,
          key: SigningKey | None = None) -> bytes:
    """``header.payload.signature``, each part base64url-encoded.

    The signature is ``signature`` when given; else ``key``'s over the signing input; else a
    placeholder that verifies nothing.
    """
    signing_input = b64(part_bytes(header)) + b"." + b64(part_bytes(payload))
    if signature is None:
        signature = raw_signature(key, signing_input) if key is not None else PLACEHOLDER_SIGNATURE
    return signing_input + b"." + b64(signature)


def sign_raw(key: SigningKey, header: Part, payload: bytes) -> bytes:
    """A token with an arbitrary header (dict or raw JSON bytes), properly signed by ``key``."""
    return token(header, payload, key=key)
