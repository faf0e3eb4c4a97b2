"""Nested tokens (JWE of a JWS) made with jwcrypto, a JOSE library Attest does not use itself.

The product opens them with joserfc; making them with another library keeps the wire
contract library-neutral, as ``tests/support/jws.py`` does for signatures.
"""

from __future__ import annotations

import json
from typing import Any

from jwcrypto import jwe, jwk

from security.signatures import b64url_encode

NESTED_HEADER = {"alg": "ECDH-ES+A256KW", "enc": "A256GCM", "cty": "JWT"}


def jwcrypto_nested(token: bytes, intake_jwk: dict[str, Any], **header: Any) -> bytes:
    """``token`` encrypted to ``intake_jwk`` by jwcrypto; ``header`` overrides members."""
    protected = {**NESTED_HEADER, "kid": intake_jwk["kid"], **header}
    protected = {k: v for k, v in protected.items() if v is not None}
    public = jwk.JWK(**{k: intake_jwk[k] for k in ("kty", "crv", "x", "y")})
    envelope = jwe.JWE(token, protected=json.dumps(protected),
                       algs=[protected["alg"], protected["enc"]])
    envelope.add_recipient(public)
    return envelope.serialize(compact=True).encode("ascii")


def with_header(nested: bytes, **members: Any) -> bytes:
    """``nested`` with its protected header rewritten (the tag no longer covers it)."""
    header_b64, rest = nested.split(b".", 1)
    header = json.loads(_b64decode(header_b64))
    header.update(members)
    return b64url_encode(json.dumps(header).encode()).encode() + b"." + rest


def flip_part(nested: bytes, index: int) -> bytes:
    """``nested`` with one bit of part ``index`` (1: wrapped key ... 4: tag) flipped."""
    parts = nested.split(b".")
    raw = bytearray(_b64decode(parts[index]))
    raw[0] ^= 0x01
    parts[index] = b64url_encode(bytes(raw)).encode()
    return b".".join(parts)


def _b64decode(part: bytes) -> bytes:
    import base64

    return base64.urlsafe_b64decode(part + b"=" * (-len(part) % 4))
