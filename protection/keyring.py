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
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from protection import envelope
from protection.blind_index import KEY_BYTES as INDEX_KEY_BYTES
from protection.blind_index import BlindIndexKey
from protection.errors import KeyNotHeld, KeyringError
from protection.tiers import PROTECTED_TIERS, Tier

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
    #: How to read this keyring again from where it came from (the worker's file), so that a
    #: long-running writer picks up a rotated version; None for keyrings that cannot change
    #: under a running process (the environment, derived copies such as ``restricted_to``).
    reopen: Callable[[], StaticKeyring] | None = field(default=None, repr=False, compare=False)

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

    def versions(self, tier: Tier) -> tuple[int, ...]:
        """The version numbers of ``tier`` this keyring has, oldest first."""
        return tuple(v.version for v in self._versions(tier))

    def without_version(self, tier: Tier, version: int) -> StaticKeyring:
        """The same keyring without ``version`` of ``tier`` (``attest keys retire-kek``).

        The current version is never removed: it is what new wrapping keys are sealed to.
        """
        versions = self._versions(tier)
        if version == versions[-1].version:
            raise KeyringError(f"{tier.label} v{version} is the current version; rotate first")
        if version not in {v.version for v in versions}:
            raise KeyringError(f"the keyring has no {tier.label} v{version}")
        tiers = dict(self.tiers)
        tiers[tier] = tuple(v for v in versions if v.version != version)
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


