"""Where keyrings come from: the local keyring files (0600) and ATTEST_KEK_* environment variables."""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from protection import envelope
from protection.blind_index import KEY_BYTES as INDEX_KEY_BYTES
from protection.blind_index import BlindIndexKey
from protection.errors import KeyNotHeld, KeyringError
from protection.keyring import (
    ENV_BLIND_INDEX,
    ENV_KEK,
    ENV_KEK_PUBLIC,
    KEYRING_FILE,
    KEYRING_FORMAT,
    WORKER_KEYRING_FILE,
    StaticKeyring,
    TierKeyVersion,
    _b64,
    _raw_private,
    _raw_public,
    _unb64,
    generate_keyring,
)
from protection.tiers import PROTECTED_TIERS, Tier

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
        # A rotation rewrites the file: writers re-read it (``FieldProtector``), checked again.
        keyring = replace(keyring, reopen=lambda: open_writer_keyring(state_dir, {}))
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


class FileKeyring:
    """The service's keyring file, re-read when a sealed key names a version newer than it holds.

    ``attest keys rotate-kek`` seals new wrapping keys to a version written to the file after
    the service started; without this, every read of that tier would fail until a restart.
    A version the file does not have either (retired, or forged) still raises ``KeyNotHeld``.
    Everything else is the loaded ``StaticKeyring``'s.
    """

    def __init__(self, path: Path, readable: Iterable[Tier] | None = None) -> None:
        self._path = Path(path)
        self._readable = None if readable is None else frozenset(readable)
        self._current = load_keyring_file(self._path, self._readable)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return repr(self._current)

    __str__ = __repr__

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # not set yet (or copying): never recurse into ``_current``
            raise AttributeError(name)
        return getattr(self._current, name)

    def readable_tiers(self) -> frozenset[Tier]:
        return self._current.readable_tiers()

    def current_version(self, tier: Tier) -> int:
        return self._current.current_version(tier)

    def seal_to_tier(self, tier: Tier, secret: bytes, context: bytes) -> bytes:
        return self._current.seal_to_tier(tier, secret, context)

    def blind_index_key(self, domain: str) -> BlindIndexKey:
        return self._current.blind_index_key(domain)

    def open_from_tier(self, tier: Tier, sealed: bytes, context: bytes) -> bytes:
        try:
            return self._current.open_from_tier(tier, sealed, context)
        except KeyNotHeld:
            if envelope.sealed_version(sealed) <= self._current.current_version(tier):
                raise
            with self._lock:
                if envelope.sealed_version(sealed) > self._current.current_version(tier):
                    self._current = load_keyring_file(self._path, self._readable)
            return self._current.open_from_tier(tier, sealed, context)


def open_keyring(
    state_dir: Path,
    environ: Mapping[str, str],
    readable: Iterable[Tier] | None = None,
    path: Path | None = None,
) -> StaticKeyring | FileKeyring:
    """The process's keyring: from the environment when it carries keys, else the local file
    (re-read when a newer key version is met: ``FileKeyring``)."""
    if environ_has_keys(environ):
        return keyring_from_environ(environ, readable)
    return FileKeyring(path or keyring_path(state_dir), readable)
