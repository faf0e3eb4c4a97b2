"""Producer signing keys: generate, store as private JWK files (0600), load, and sign.

Signing goes through ``joserfc`` (a maintained JOSE library) so that what we produce is
exactly what any other JOSE producer would; verification is our own strict path.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from joserfc import jws
from joserfc.jwk import ECKey, OKPKey

from security.errors import UnsupportedAlgorithm, UnusableKey
from security.signatures import canonical_alg

PUBLIC_MEMBERS = ("kty", "crv", "x", "y", "kid", "alg", "use")


@dataclass(frozen=True)
class SigningKey:
    """A private key with its registry identity. Its repr never shows key material."""

    kid: str
    source: str
    alg: str
    _private_jwk: dict[str, Any]

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid!r}, source={self.source!r}, alg={self.alg!r})"

    @property
    def public_jwk(self) -> dict[str, Any]:
        return public_part(self._private_jwk)

    def sign(self, payload: bytes, typ: str, alg_name: str | None = None) -> bytes:
        """A compact JWS over ``payload`` with header {alg, kid, typ}."""
        alg = alg_name or self.alg
        if canonical_alg(alg) != self.alg:
            raise UnsupportedAlgorithm(f"a {self.alg} key cannot sign as {alg}")
        # joserfc binds a JWK's "alg" to one name; drop it so the EdDSA alias can be used too.
        material = {k: v for k, v in self._private_jwk.items() if k != "alg"}
        key = OKPKey.import_key(material) if self.alg == "Ed25519" else ECKey.import_key(material)
        header = {"alg": alg, "kid": self.kid, "typ": typ}
        return jws.serialize_compact(header, payload, key, algorithms=[alg]).encode("ascii")


def public_part(jwk: dict[str, Any]) -> dict[str, Any]:
    """The public members of a JWK (never ``d``)."""
    return {k: v for k, v in jwk.items() if k in PUBLIC_MEMBERS}


def new_kid(source: str) -> str:
    return f"{source}-{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(4)}"


def generate_key(source: str, alg: str = "Ed25519", kid: str | None = None) -> SigningKey:
    """A fresh key pair for ``source`` (Ed25519 by default, or ES256)."""
    name = canonical_alg(alg)
    kid = kid or new_kid(source)
    key = OKPKey.generate_key("Ed25519") if name == "Ed25519" else ECKey.generate_key("P-256")
    private = dict(key.as_dict(private=True))
    private.update({"kid": kid, "alg": name, "use": "sig"})
    return SigningKey(kid=kid, source=source, alg=name, _private_jwk=private)


def write_private_key(key: SigningKey, keys_dir: Path) -> Path:
    """Write the private JWK to ``keys_dir/<kid>.jwk``, created 0600 in a 0700 folder."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)
    path = keys_dir / f"{key.kid}.jwk"
    document = {"source": key.source, "jwk": key._private_jwk}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(document, out)
    return path


def load_private_key(path: Path) -> SigningKey:
    """Read a key file written by ``write_private_key``."""
    try:
        document = json.loads(path.read_text())
        jwk = document["jwk"]
        return SigningKey(
            kid=jwk["kid"], source=document["source"], alg=canonical_alg(jwk["alg"]),
            _private_jwk=jwk,
        )
    except (OSError, ValueError, KeyError, TypeError, UnsupportedAlgorithm) as exc:
        raise UnusableKey(f"{path} is not an Attest key file: {exc}") from exc


def keys_for_source(keys_dir: Path, source: str) -> list[SigningKey]:
    """Every local private key of ``source``, newest file first."""
    if not keys_dir.is_dir():
        return []
    files = sorted(keys_dir.glob("*.jwk"), key=lambda p: p.stat().st_mtime, reverse=True)
    keys = [load_private_key(p) for p in files]
    return [k for k in keys if k.source == source]
