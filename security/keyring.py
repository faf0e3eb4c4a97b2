"""Keyrings: the tiers' key-encryption keys and the identifier domains' blind-index keys.

``Keyring`` is the interface the rest of Attest uses. It offers operations, not key bytes:
seal a secret to a tier, open it again, hand out a domain's blind-index key. Two providers
ship here, both backed by X25519 key pairs per tier (``StaticKeyring``):

* a local keyring file (JSON, created 0600 with ``O_EXCL`` in a 0700 folder; refused when
  group or others can read it), made by ``attest keys init`` or ``attest dev up``;
* environment variables (``ATTEST_KEK_<TIER>``, ``ATTEST_KEK_PUBLIC_<TIER>``,
  ``ATTEST_BLIND_INDEX_<DOMAIN>``), for containers whose secrets arrive that way.

A KMS provider plugs in by implementing ``Keyring``: ``seal_to_tier`` / ``open_from_tier``
become the KMS's Encrypt / Decrypt with ``context`` as the encryption context, and
``readable_tiers`` is what the process's cloud role may decrypt. Nothing else changes.

A process loads only the private keys of the tiers its role may read (``readable=``); every
other tier is public-key only, so its fields can be written but not read here.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from security import envelope
from security.blind_index import KEY_BYTES as INDEX_KEY_BYTES
from security.blind_index import BlindIndexKey
from security.protection_errors import KeyNotHeld, KeyringError
from security.tiers import PROTECTED_TIERS, Tier

KEYRING_FORMAT = "attest.keyring.v1"
KEYRING_FILE = "keyring.json"
WORKER_KEYRING_FILE = "worker-keyring.json"
ENV_KEK = "ATTEST_KEK_"
ENV_KEK_PUBLIC = "ATTEST_KEK_PUBLIC_"
ENV_BLIND_INDEX = "ATTEST_BLIND_INDEX_"


@runtime_checkable
class Keyring(Protocol):
    """What field protection needs from a key provider (local file, environment, or a KMS)."""

    def readable_tiers(self) -> frozenset[Tier]:
        """Tiers whose sealed secrets this process can open."""
        ...

    def current_version(self, tier: Tier) -> int:
        """The version new seals to ``tier`` use."""
        ...

    def seal_to_tier(self, tier: Tier, secret: bytes, context: bytes) -> bytes:
        """Seal a 32-byte secret to the tier's current key; needs no private key."""
        ...

    def open_from_tier(self, tier: Tier, sealed: bytes, context: bytes) -> bytes:
        """Open a sealed secret; raises ``KeyNotHeld`` for a tier (or version) not held."""
        ...

    def blind_index_key(self, domain: str) -> BlindIndexKey:
        """The domain's blind-index key; raises ``KeyNotHeld`` when absent."""
        ...


# -- key material in memory ------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str, what: str, length: int) -> bytes:
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError, TypeError):
        raise KeyringError(f"{what} is not base64url") from None
    if len(data) != length:
        raise KeyringError(f"{what} must be {length} bytes")
    return data


def _raw_private(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())


def _raw_public(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True, slots=True)
class TierKeyVersion:
    """One version of a tier's key pair; ``private`` is None where this process may not read."""

    version: int
    public: X25519PublicKey = field(repr=False)
    private: X25519PrivateKey | None = field(repr=False, default=None)
    created_at: str = ""

    def __repr__(self) -> str:
        held = "private" if self.private else "public only"
        return f"TierKeyVersion(version={self.version}, {held})"

    @classmethod
    def generate(cls, version: int) -> TierKeyVersion:
        private = X25519PrivateKey.generate()
        return cls(version, private.public_key(), private,
                   datetime.now(UTC).isoformat(timespec="seconds"))

    def public_only(self) -> TierKeyVersion:
        return TierKeyVersion(self.version, self.public, None, self.created_at)


@dataclass(frozen=True)
class StaticKeyring:
    """A keyring whose keys are in this process's memory (file and environment providers)."""

    tiers: Mapping[Tier, tuple[TierKeyVersion, ...]]
    index_keys: Mapping[str, BlindIndexKey] = field(default_factory=dict)
    origin: str = "memory"

    def __repr__(self) -> str:
        held = ",".join(t.label for t in sorted(self.readable_tiers())) or "none"
        return (f"StaticKeyring(origin={self.origin!r}, readable={held}, "
                f"domains={sorted(self.index_keys)})")

    __str__ = __repr__

    # -- the Keyring interface ------------------------------------------------------------

    def readable_tiers(self) -> frozenset[Tier]:
        return frozenset(t for t, versions in self.tiers.items()
                         if any(v.private is not None for v in versions))

    def current_version(self, tier: Tier) -> int:
        return self._versions(tier)[-1].version

    def seal_to_tier(self, tier: Tier, secret: bytes, context: bytes) -> bytes:
        current = self._versions(tier)[-1]
        return envelope.seal_to_tier(current.public, tier, current.version, secret, context)

    def open_from_tier(self, tier: Tier, sealed: bytes, context: bytes) -> bytes:
        version = envelope.sealed_version(sealed)
        match = next((v for v in self._versions(tier) if v.version == version), None)
        if match is None or match.private is None:
            raise KeyNotHeld(
                f"this process does not hold the {tier.label} key-encryption key"
                + ("" if match is None else f" (version {version})")
            )
        return envelope.open_from_tier(match.private, tier, sealed, context)

    def blind_index_key(self, domain: str) -> BlindIndexKey:
        try:
            return self.index_keys[domain]
        except KeyError:
            raise KeyNotHeld(f"no blind-index key for the {domain!r} domain") from None

    # -- deriving keyrings ----------------------------------------------------------------

    def _versions(self, tier: Tier) -> tuple[TierKeyVersion, ...]:
        versions = self.tiers.get(tier)
        if not versions:
            raise KeyNotHeld(f"the keyring has no {tier.label} key-encryption key")
        return versions

    def restricted_to(self, readable: Iterable[Tier]) -> StaticKeyring:
        """The same keyring with private keys only for ``readable`` tiers."""
        keep = frozenset(readable)
        tiers = {
            tier: tuple(v if tier in keep else v.public_only() for v in versions)
            for tier, versions in self.tiers.items()
        }
        return StaticKeyring(MappingProxyType(tiers), self.index_keys, self.origin)

    def with_new_version(self, tier: Tier) -> StaticKeyring:
        """A keyring with a fresh key pair for ``tier`` as its current version (older ones kept)."""
        versions = self._versions(tier)
        tiers = dict(self.tiers)
        tiers[tier] = (*versions, TierKeyVersion.generate(versions[-1].version + 1))
        return StaticKeyring(MappingProxyType(tiers), self.index_keys, self.origin)

    def completed(self, domains: Iterable[str]) -> StaticKeyring:
        """Add a v1 key pair for any missing protected tier and a key for any missing domain."""
        tiers = dict(self.tiers)
        for tier in PROTECTED_TIERS:
            tiers.setdefault(tier, (TierKeyVersion.generate(1),))
        index_keys = dict(self.index_keys)
        for domain in domains:
            index_keys.setdefault(domain, BlindIndexKey(domain, os.urandom(INDEX_KEY_BYTES)))
        return StaticKeyring(MappingProxyType(tiers), MappingProxyType(index_keys), self.origin)

    def describe(self) -> list[str]:
        """Human lines about what is held: tiers, versions, domains. Never key material."""
        lines = []
        for tier in sorted(self.tiers):
            versions = ", ".join(
                f"v{v.version}{'' if v.private else ' (public only)'}" for v in self.tiers[tier]
            )
            lines.append(f"{tier.label}: {versions}")
        lines.append(f"blind-index domains: {', '.join(sorted(self.index_keys)) or 'none'}")
        return lines


def generate_keyring(domains: Iterable[str], origin: str = "memory") -> StaticKeyring:
    """A fresh keyring: v1 of every protected tier and one key per identifier domain."""
    return StaticKeyring(MappingProxyType({}), MappingProxyType({}), origin).completed(domains)


# -- the keyring file ------------------------------------------------------------------------


def keyring_path(state_dir: Path) -> Path:
    """Where the local keyring lives: ``<state_dir>/keyring.json``."""
    return Path(state_dir) / KEYRING_FILE


def worker_keyring_path(state_dir: Path) -> Path:
    """The worker's keyring: tier public keys and blind-index keys, no private tier key."""
    return Path(state_dir) / WORKER_KEYRING_FILE


def _document(keyring: StaticKeyring) -> dict[str, Any]:
    return {
        "format": KEYRING_FORMAT,
        "tiers": {
            tier.label: [
                {"version": v.version, "public": _b64(_raw_public(v.public)),
                 **({"private": _b64(_raw_private(v.private))} if v.private else {}),
                 "created_at": v.created_at}
                for v in versions
            ]
            for tier, versions in sorted(keyring.tiers.items())
        },
        "blind_index": {d: _b64(k.material) for d, k in sorted(keyring.index_keys.items())},
    }


def _from_document(document: Any, origin: str, readable: frozenset[Tier] | None) -> StaticKeyring:
    if not isinstance(document, dict) or document.get("format") != KEYRING_FORMAT:
        raise KeyringError(f"{origin} is not an {KEYRING_FORMAT} keyring")
    tiers: dict[Tier, tuple[TierKeyVersion, ...]] = {}
    try:
        for label, entries in document.get("tiers", {}).items():
            tier = Tier.parse(label)
            versions = []
            for entry in sorted(entries, key=lambda e: int(e["version"])):
                what = f"{origin}: {label} v{entry['version']}"
                public = X25519PublicKey.from_public_bytes(
                    _unb64(entry["public"], f"{what} public key", envelope.X25519_BYTES))
                private = None
                if "private" in entry and (readable is None or tier in readable):
                    private = X25519PrivateKey.from_private_bytes(
                        _unb64(entry["private"], f"{what} private key", envelope.X25519_BYTES))
                    if _raw_public(private.public_key()) != _raw_public(public):
                        raise KeyringError(f"{what}: the private key does not match the public key")
                versions.append(TierKeyVersion(int(entry["version"]), public, private,
                                               str(entry.get("created_at", ""))))
            tiers[tier] = tuple(versions)
        index_keys = {
            str(domain): BlindIndexKey(str(domain), _unb64(text, f"{origin}: {domain} index key",
                                                           INDEX_KEY_BYTES))
            for domain, text in document.get("blind_index", {}).items()
        }
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise KeyringError(f"{origin} is malformed ({type(exc).__name__})") from None
    return StaticKeyring(MappingProxyType(tiers), MappingProxyType(index_keys), origin)


def write_keyring_file(keyring: StaticKeyring, path: Path, *, replace: bool = False) -> None:
    """Write ``keyring`` to ``path`` (0600 in a 0700 folder), atomically.

    A new file is created with ``O_EXCL``, so an existing keyring is never overwritten unless
    ``replace`` is set; a replacement is written beside it and renamed over it, so a crash
    leaves either the old or the new keyring, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    target = path.with_name(f".{path.name}.{os.getpid()}.tmp") if replace else path
    if replace and not path.exists():
        raise KeyringError(f"no keyring at {path} to replace")
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyringError(f"{target} already exists; a keyring is never overwritten") from None
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(_document(keyring), out, indent=1)
            out.flush()
            os.fsync(out.fileno())
        if replace:
            os.replace(target, path)
    except BaseException:
        if replace:
            target.unlink(missing_ok=True)
        raise


def load_keyring_file(path: Path, readable: Iterable[Tier] | None = None) -> StaticKeyring:
    """Read a keyring file, keeping private keys only for ``readable`` tiers (None: all).

    Refused when the file can be read by group or others, as ssh refuses a loose key.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyringError(f"no keyring at {path}; run 'attest keys init'") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyringError(f"{path} is accessible by group or others (mode {stat.S_IMODE(mode):o}); "
                           "run 'chmod 600' on it")
    try:
        document = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        raise KeyringError(f"{path} cannot be read as JSON") from None
    keep = None if readable is None else frozenset(readable)
    return _from_document(document, str(path), keep)


def ensure_keyring_file(path: Path, domains: Iterable[str]) -> tuple[StaticKeyring, bool]:
    """Create the keyring at ``path`` if absent, else complete it; return (keyring, created)."""
    domains = tuple(domains)
    path = Path(path)
    if not path.exists():
        keyring = generate_keyring(domains, origin=str(path))
        write_keyring_file(keyring, path)
        return keyring, True
    existing = load_keyring_file(path)
    completed = existing.completed(domains)
    if _document(completed) != _document(existing):
        write_keyring_file(completed, path, replace=True)
    return completed, False


def write_worker_keyring(state_dir: Path, keyring: StaticKeyring) -> Path:
    """Write (or refresh) the worker's keyring from ``keyring``: its public half and index keys."""
    path = worker_keyring_path(state_dir)
    public = keyring.restricted_to(())
    if path.exists():
        if _document(load_keyring_file(path)) == _document(public):
            return path
        write_keyring_file(public, path, replace=True)
    else:
        write_keyring_file(public, path)
    return path


def ensure_process_keyrings(state_dir: Path, domains: Iterable[str]) -> tuple[StaticKeyring, bool]:
    """The access service's keyring (``keyring.json``: every tier's private key) and, derived from
    it, the worker's (``worker-keyring.json``: public keys only). Returns (service's, created)."""
    keyring, created = ensure_keyring_file(keyring_path(state_dir), domains)
    write_worker_keyring(state_dir, keyring)
    return keyring, created


def open_writer_keyring(state_dir: Path, environ: Mapping[str, str]) -> StaticKeyring:
    """The worker's keyring, refused when it holds any private tier key.

    From the environment when it carries keys (then only ``ATTEST_KEK_PUBLIC_*`` may be set),
    else from ``worker-keyring.json``. A worker that could open tiers would let whoever
    compromises it read the whole history; it must fail at start instead.
    """
    if environ_has_keys(environ):
        keyring = keyring_from_environ(environ)
        origin = "the environment (ATTEST_KEK_<TIER> variables)"
    else:
        keyring = load_keyring_file(worker_keyring_path(state_dir))
        origin = str(worker_keyring_path(state_dir))
    if keyring.readable_tiers():
        held = ", ".join(t.label for t in sorted(keyring.readable_tiers()))
        raise KeyringError(f"{origin} holds private tier keys ({held}); a worker takes only public "
                           "tier keys (worker-keyring.json or ATTEST_KEK_PUBLIC_*)")
    return keyring


def open_index_keyring(state_dir: Path, environ: Mapping[str, str]) -> StaticKeyring:
    """A keyring for blind indexes only (``attest forget``): no private tier key is loaded.

    The worker's file is enough; the service's is used only where it is the one present.
    """
    if environ_has_keys(environ):
        return keyring_from_environ(environ, readable=())
    worker = worker_keyring_path(state_dir)
    return load_keyring_file(worker if worker.exists() else keyring_path(state_dir), readable=())


# -- the environment provider -----------------------------------------------------------------


def keyring_from_environ(
    environ: Mapping[str, str], readable: Iterable[Tier] | None = None
) -> StaticKeyring:
    """Keys from environment variables (values are ``v<version>:<base64url>`` lists).

    ``ATTEST_KEK_<TIER>``: private X25519 keys of a tier, e.g. ``v1:...,v2:...``.
    ``ATTEST_KEK_PUBLIC_<TIER>``: public keys only (what a writer needs).
    ``ATTEST_BLIND_INDEX_<DOMAIN>``: a domain's 32-byte index key (base64url).
    """
    keep = None if readable is None else frozenset(readable)
    tiers: dict[Tier, tuple[TierKeyVersion, ...]] = {}
    for tier in PROTECTED_TIERS:
        suffix = tier.name
        versions: dict[int, TierKeyVersion] = {}
        for number, text in _versioned(environ.get(ENV_KEK_PUBLIC + suffix, ""),
                                       ENV_KEK_PUBLIC + suffix):
            public = X25519PublicKey.from_public_bytes(
                _unb64(text, f"{ENV_KEK_PUBLIC}{suffix} v{number}", envelope.X25519_BYTES))
            versions[number] = TierKeyVersion(number, public)
        for number, text in _versioned(environ.get(ENV_KEK + suffix, ""), ENV_KEK + suffix):
            private = X25519PrivateKey.from_private_bytes(
                _unb64(text, f"{ENV_KEK}{suffix} v{number}", envelope.X25519_BYTES))
            held = private if keep is None or tier in keep else None
            versions[number] = TierKeyVersion(number, private.public_key(), held)
        if versions:
            tiers[tier] = tuple(versions[n] for n in sorted(versions))
    index_keys = {}
    for name, value in environ.items():
        if name.startswith(ENV_BLIND_INDEX) and value:
            domain = name[len(ENV_BLIND_INDEX):].lower()
            index_keys[domain] = BlindIndexKey(domain, _unb64(value, name, INDEX_KEY_BYTES))
    return StaticKeyring(MappingProxyType(tiers), MappingProxyType(index_keys), "environment")


def _versioned(text: str, name: str) -> list[tuple[int, str]]:
    out = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        version, sep, value = item.partition(":")
        if not sep or not version.startswith("v") or not version[1:].isdigit():
            raise KeyringError(f"{name} entries look like v1:<base64url>, comma-separated")
        out.append((int(version[1:]), value))
    return out


def environ_has_keys(environ: Mapping[str, str]) -> bool:
    """Whether the environment provides a keyring (any ``ATTEST_KEK_*`` variable)."""
    return any(name.startswith(ENV_KEK) for name in environ)


def open_keyring(
    state_dir: Path,
    environ: Mapping[str, str],
    readable: Iterable[Tier] | None = None,
    path: Path | None = None,
) -> StaticKeyring:
    """The process's keyring: from the environment when it carries keys, else the local file."""
    if environ_has_keys(environ):
        return keyring_from_environ(environ, readable)
    return load_keyring_file(path or keyring_path(state_dir), readable)
