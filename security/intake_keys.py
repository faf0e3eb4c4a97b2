"""Attest's intake keys: the EC keys producers encrypt their signed events to (nested JWT).

Each key is a private P-256 JWK in its own file, ``<folder>/<kid>.jwk``, 0600 in a 0700
folder, written whole or not at all. Several may be held at once: a token decrypts with
whichever held key its ``kid`` names, and producers are told the newest (rotation is
generating a new key, waiting until producers use it and the intake topics no longer hold
tokens for the old one, then deleting the old file).

P-256 rather than X25519: ECDH-ES with P-256 is in every JOSE library (joserfc, jwcrypto,
jose for Node, nimbus, go-jose, .NET), while X25519 for JWE (RFC 8037 ``OKP``) is missing in
several of them, and producers are written in any language (docs/events.md).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from joserfc.jwk import ECKey

from security.errors import UnusableKey
from security.keyfiles import check_kid, check_private_mode
from security.private_files import private_folder

log = logging.getLogger("attest.intake_keys")

#: The one key-management algorithm and content encryption of a nested token (RFC 7518 4.6, 5.3).
JWE_ALG = "ECDH-ES+A256KW"
JWE_ENC = "A256GCM"
CURVE = "P-256"
_PUBLIC_MEMBERS = ("kty", "crv", "x", "y")


@dataclass(frozen=True)
class IntakeKey:
    """One private intake key. Its repr never shows key material."""

    kid: str
    created_at: datetime
    _private_jwk: dict[str, Any] = field(repr=False)

    def __repr__(self) -> str:
        return f"IntakeKey(kid={self.kid!r}, created_at={self.created_at.isoformat()})"

    @property
    def public_jwk(self) -> dict[str, Any]:
        """What producers encrypt to: the public point, the kid, the algorithm and ``use``."""
        public = {k: self._private_jwk[k] for k in _PUBLIC_MEMBERS}
        return {**public, "kid": self.kid, "alg": JWE_ALG, "use": "enc"}

    def private_key(self) -> ECKey:
        """The key for joserfc's decryption (never logged, never leaves the process).

        Imported once per key: the import (point and scalar checks) cost a quarter of each
        decryption when it was done per event.
        """
        return self._imported

    @cached_property
    def _imported(self) -> ECKey:
        return ECKey.import_key({k: v for k, v in self._private_jwk.items()
                                 if k in (*_PUBLIC_MEMBERS, "d")})


def new_intake_kid() -> str:
    return f"attest-intake-{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(4)}"


def generate_intake_key(kid: str | None = None) -> IntakeKey:
    """A fresh P-256 key pair with ``kid`` (default: ``attest-intake-<date>-<random>``)."""
    kid = check_kid(kid or new_intake_kid())
    private = dict(ECKey.generate_key(CURVE, private=True).as_dict(private=True))
    return IntakeKey(kid=kid, created_at=datetime.now(UTC), _private_jwk=private)


def write_intake_key(key: IntakeKey, folder: Path) -> Path:
    """Write ``folder/<kid>.jwk`` 0600 in a 0700 folder; never overwrites an existing file.

    Written to a private temporary name, flushed, then linked to its name (which fails if it
    exists), so a crash or a full disk leaves the file complete or absent.
    """
    path = folder / f"{check_kid(key.kid)}.jwk"
    private_folder(folder)
    document = json.dumps({
        "kid": key.kid, "created_at": key.created_at.isoformat(),
        "jwk": {**key._private_jwk, "kid": key.kid, "alg": JWE_ALG, "use": "enc"},
    }).encode("utf-8")
    tmp = folder / f".{key.kid}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
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
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_intake_key(path: Path) -> IntakeKey:
    """Read a file written by ``write_intake_key``; refused when group or others may read it."""
    check_private_mode(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        jwk = document["jwk"]
        if jwk.get("kty") != "EC" or jwk.get("crv") != CURVE or not isinstance(jwk.get("d"), str):
            raise ValueError(f"not a private {CURVE} JWK")
        key = IntakeKey(kid=check_kid(document["kid"]),
                        created_at=datetime.fromisoformat(document["created_at"]),
                        _private_jwk={k: jwk[k] for k in (*_PUBLIC_MEMBERS, "d")})
        key.private_key()  # the point must be on the curve, the scalar in range
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UnusableKey(f"{path} is not an Attest intake key file: {exc}") from exc
    if key.created_at.tzinfo is None:
        raise UnusableKey(f"{path}: created_at needs a time zone offset")
    return key


@dataclass(frozen=True)
class IntakeKeySet:
    """The intake keys held now, by kid. ``newest`` is the one producers are told."""

    keys: dict[str, IntakeKey] = field(default_factory=dict)

    def get(self, kid: str) -> IntakeKey | None:
        return self.keys.get(kid)

    @property
    def newest(self) -> IntakeKey | None:
        return max(self.keys.values(), key=lambda k: (k.created_at, k.kid), default=None)

    def public_jwks(self) -> dict[str, list[dict[str, Any]]]:
        """Every held public key, newest first (a producer encrypts to the first)."""
        ordered = sorted(self.keys.values(), key=lambda k: (k.created_at, k.kid), reverse=True)
        return {"keys": [k.public_jwk for k in ordered]}


def load_intake_keys(folder: Path) -> IntakeKeySet:
    """Every ``*.jwk`` in ``folder`` (none when the folder does not exist).

    One unreadable or group-readable file fails the whole load (``UnusableKey``): a worker
    must not start half-keyed and dead-letter as ``undecryptable`` what it could have read.
    """
    if not folder.is_dir():
        return IntakeKeySet()
    keys = [load_intake_key(p) for p in sorted(folder.glob("*.jwk"))]
    return IntakeKeySet({k.kid: k for k in keys})


def ensure_intake_key(folder: Path) -> tuple[IntakeKey, bool]:
    """The newest held key, or a new one written to ``folder``; (key, whether it was made)."""
    newest = load_intake_keys(folder).newest
    if newest is not None:
        return newest, False
    key = generate_intake_key()
    write_intake_key(key, folder)
    return key, True


class HeldIntakeKeys:
    """The intake keys of a folder, re-read every ``refresh_s`` and when a token names a kid
    it does not hold.

    A rotation (``attest keys intake-key generate`` while workers run) becomes usable
    without a restart; re-reading on a miss is rate-limited (``min_reload_s``) so that a
    stream of tokens with made-up kids cannot turn into a stream of folder reads. Retiring a
    key is deleting its file: the periodic re-read drops it, so a running worker stops
    opening tokens to it within ``refresh_s`` (``ATTEST_KEYRING_REFRESH_S``) instead of
    holding it until a restart (security review). The per-token cost is one monotonic-clock
    comparison; the folder is read only when one of the two intervals has passed.
    """

    def __init__(self, folder: Path, min_reload_s: float = 5.0, refresh_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._folder = folder
        self._min_reload_s = min_reload_s
        self._refresh_s = refresh_s
        self._clock = clock
        self.key_set = load_intake_keys(folder)
        self._loaded_at = clock()

    def get(self, kid: str) -> IntakeKey | None:
        now = self._clock()
        since = now - self._loaded_at
        if since >= self._refresh_s:
            self._reload(now)
        key = self.key_set.get(kid)
        if key is None and since < self._refresh_s and since >= self._min_reload_s:
            self._reload(now)
            key = self.key_set.get(kid)
        return key

    def _reload(self, now: float) -> None:
        """Hold what the folder holds now. A folder that cannot be read whole (a file being
        copied in, a wrong mode) keeps the held keys, less those whose file is gone: a
        retired key is dropped even while another file is unusable."""
        self._loaded_at = now
        try:
            fresh = load_intake_keys(self._folder)
        except UnusableKey as exc:
            kept = {kid: key for kid, key in self.key_set.keys.items()
                    if (self._folder / f"{kid}.jwk").is_file()}
            log.warning("intake keys not re-read, the held ones stay (%d of %d whose files "
                        "remain): %s", len(kept), len(self.key_set.keys), exc)
            fresh = IntakeKeySet(kept)
        dropped = sorted(set(self.key_set.keys) - set(fresh.keys))
        if dropped:
            log.info("intake keys dropped, their files are gone: %s", ", ".join(dropped))
        self.key_set = fresh
