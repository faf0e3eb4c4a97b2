"""Signed checkpoints (C2SP signed notes) over the chain's head, and Attest's own signing key."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from security.errors import UnusableKey
from security.keyfiles import SigningKey, generate_key, load_private_key
from security.signatures import b64url_decode, public_key_for

ORIGIN = "attest audit log"
SERVICE_KEY_SOURCE = "attest-audit"
_ED25519_NOTE_ALG = b"\x01"  # signed-note signature type byte for Ed25519


def checkpoint_due(pending: int, age_s: float | None, every: int, interval_s: float) -> bool:
    """Whether the sink should sign a checkpoint now.

    ``pending`` counts records after the last checkpoint that are *not* checkpoint records:
    the sink reads its own checkpoint records back from the audit topic, and if they counted,
    each checkpoint would eventually cause the next one, forever, on an idle log.
    ``age_s``: seconds since the last checkpoint (or the first uncovered record).
    """
    if pending <= 0:
        return False
    return pending >= every or (age_s is not None and age_s >= interval_s)


# --- signed checkpoints (C2SP signed note) -----------------------------------------------


def checkpoint_body(count: int, head_hash: str) -> str:
    """The note text: origin, record count, base64 of the 32-byte head hash."""
    head = base64.b64encode(bytes.fromhex(head_hash)).decode("ascii")
    return f"{ORIGIN}\n{count}\n{head}\n"


def _key_hash(name: str, public: bytes) -> bytes:
    """Signed-note key id: SHA-256(name || LF || 0x01 || public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + _ED25519_NOTE_ALG + public).digest()[:4]


@dataclass(frozen=True)
class NoteVerifier:
    """A trusted public key for checkpoint signatures; ``name`` is the key's kid."""

    name: str
    public: bytes

    @classmethod
    def from_jwk(cls, jwk: dict[str, Any]) -> NoteVerifier:
        """From a public Ed25519 JWK (``attest audit pubkey``); raises ``UnusableKey``."""
        if not isinstance(jwk.get("kid"), str):
            raise UnusableKey("a checkpoint key needs a string 'kid'")
        return cls(jwk["kid"], public_key_for("Ed25519", jwk).public_bytes_raw())

    def verifies(self, body: str, signature_line: str) -> bool | None:
        """True/False for a line by this key; None when the line names another key."""
        try:
            _dash, name, blob = signature_line.split(" ")
            raw = base64.b64decode(blob, validate=True)
        except ValueError:
            return None
        if name != self.name or raw[:4] != _key_hash(self.name, self.public):
            return None
        try:
            ed25519.Ed25519PublicKey.from_public_bytes(self.public).verify(raw[4:], body.encode())
        except InvalidSignature:
            return False
        return True


class CheckpointSigner:
    """Signs checkpoint bodies with the service's Ed25519 key. Holds no state but the key."""

    def __init__(self, key: SigningKey) -> None:
        jwk = key._private_jwk
        self.name = key.kid
        self._private = ed25519.Ed25519PrivateKey.from_private_bytes(b64url_decode(jwk["d"]))
        self.public_jwk = key.public_jwk

    def sign(self, body: str) -> str:
        key_id = _key_hash(self.name, self.verifier().public)
        blob = base64.b64encode(key_id + self._private.sign(body.encode())).decode()
        return f"{body}\n\u2014 {self.name} {blob}\n"

    def verifier(self) -> NoteVerifier:
        return NoteVerifier.from_jwk(self.public_jwk)


@dataclass(frozen=True)
class ParsedCheckpoint:
    """A checkpoint split into its signed body and its signature lines."""

    count: int
    head_hash: str
    body: str
    signatures: tuple[str, ...]


def parse_checkpoint(text: str) -> ParsedCheckpoint:
    """Split a signed checkpoint; raises ``ValueError`` when it is not one of ours."""
    body, sep, sigs = text.partition("\n\n")
    body, lines = body + "\n", body.split("\n")
    if not sep:
        raise ValueError("no signature block")
    if len(lines) != 3 or lines[0] != ORIGIN or not lines[1].isdigit():
        raise ValueError("not an attest audit checkpoint")
    head = base64.b64decode(lines[2], validate=True)
    if len(head) != 32:
        raise ValueError("the head hash is not 32 bytes")
    signatures = tuple(line for line in sigs.split("\n") if line)
    if not signatures or not all(line.startswith("\u2014 ") for line in signatures):
        raise ValueError("malformed signature lines")
    return ParsedCheckpoint(int(lines[1]), head.hex(), body, signatures)


def checkpoint_signed_by(parsed: ParsedCheckpoint, verifiers: list[NoteVerifier]) -> bool | None:
    """True: a trusted key signed it; False: a trusted key's line is invalid; None: no such line."""
    verdicts = [v.verifies(parsed.body, line) for line in parsed.signatures for v in verifiers]
    if False in verdicts:
        return False
    return True if True in verdicts else None


def load_or_create_service_key(path: Path) -> SigningKey:
    """Attest's own Ed25519 key; the first caller creates it, mode 0600."""
    return load_or_create_ed25519_key(path, SERVICE_KEY_SOURCE)


def load_or_create_ed25519_key(path: Path, source: str, *, private_parent: bool = False) -> SigningKey:
    """The Ed25519 key in ``path``; the first caller creates it, mode 0600.

    Written to a private temporary file and then hard-linked into place, so a concurrent
    worker either sees no file or a complete one, and exactly one key ever wins.
    ``private_parent``: create the folder 0700 (a folder of keys only).
    """
    if path.exists():
        return load_private_key(path)
    key = generate_key(source, "Ed25519")
    path.parent.mkdir(mode=0o700 if private_parent else 0o777, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump({"source": key.source, "jwk": key._private_jwk}, out)
        os.link(tmp, path)
    except FileExistsError:  # another process won the race: use its key
        return load_private_key(path)
    finally:
        tmp.unlink(missing_ok=True)
    return key


