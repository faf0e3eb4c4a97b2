"""Producer signing keys: generate, store as private JWK files (0600), load, and sign.

Signing goes through ``joserfc`` (a maintained JOSE library) so that what we produce is
exactly what any other JOSE producer would; verification is our own strict path.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
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


#: A kid that can name a file in the keys folder: no path separator, no leading dot, no
#: control character, at most 200 characters (the registry column's width).
_FILE_KID = re.compile(r"[A-Za-z0-9_@+=:,-][A-Za-z0-9_.@+=:,-]{0,199}")


class InvalidKid(UnusableKey):
    """A kid that cannot name a key file (path separators, a leading dot, odd characters)."""


def check_kid(kid: str) -> str:
    """``kid`` when it can name a file ``<kid>.jwk`` in the keys folder; ``InvalidKid`` otherwise.

    ``attest keys generate --kid ../../x`` once wrote the private key outside the keys folder.
    """
    if not _FILE_KID.fullmatch(kid):
        raise InvalidKid(
            f"kid {kid[:80]!r} is not usable: letters, digits and . _ @ + = : , - only "
            "(no path separator, not starting with a dot), at most 200 characters"
        )
    return kid


def new_kid(source: str) -> str:
    return f"{source}-{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(4)}"


def generate_key(source: str, alg: str = "Ed25519", kid: str | None = None) -> SigningKey:
    """A fresh key pair for ``source`` (Ed25519 by default, or ES256)."""
    name = canonical_alg(alg)
    kid = check_kid(kid or new_kid(source))
    key = OKPKey.generate_key("Ed25519") if name == "Ed25519" else ECKey.generate_key("P-256")
    private = dict(key.as_dict(private=True))
    private.update({"kid": kid, "alg": name, "use": "sig"})
    return SigningKey(kid=kid, source=source, alg=name, _private_jwk=private)


def write_private_key(key: SigningKey, keys_dir: Path) -> Path:
    """Write the private JWK to ``keys_dir/<kid>.jwk``, 0600 in a 0700 folder, whole or not at all.

    The key is written to a private temporary file (``O_EXCL``, 0600, a name that is not
    ``*.jwk``), flushed to disk, then linked to its name, which fails if that name exists
    (never overwritten). Any failure (a full disk, a read-only one) removes the temporary
    file, so ``<kid>.jwk`` is either complete or absent: an empty key file once made every
    later ``attest produce`` of the source fail (issue 15).
    """
    path = keys_dir / f"{check_kid(key.kid)}.jwk"
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)
    document = json.dumps({"source": key.source, "jwk": key._private_jwk}).encode("utf-8")
    tmp = keys_dir / f".{key.kid}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            view = memoryview(document)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(tmp, path)
        _fsync_dir(keys_dir)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _fsync_dir(folder: Path) -> None:
    """Make a new name in ``folder`` durable (best effort where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_private_mode(path: Path) -> None:
    """Refuse a private key file that group or others may read or write (as ssh does)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise UnusableKey(f"{path} cannot be read: {exc.strerror or exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UnusableKey(
            f"{path} is accessible by group or others (mode {stat.S_IMODE(mode):04o}); "
            f"a private key must be 0600: run 'chmod 600 {path}'"
        )


def load_private_key(path: Path) -> SigningKey:
    """Read a key file written by ``write_private_key``; refused when others may read it."""
    check_private_mode(path)
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
