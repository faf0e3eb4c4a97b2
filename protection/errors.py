"""Errors of field protection, keyrings and access policy.

All derive from ``SecurityError``, so the CLI prints them as one sentence. Messages never
carry key material or a protected value.
"""

from __future__ import annotations

from datetime import datetime

from security.errors import SecurityError


class FieldProtectionError(SecurityError):
    """Base of field encryption, keyring and policy failures."""


class TierCatalogError(FieldProtectionError):
    """schemas/tiers.yaml is missing, malformed or disagrees with the JSON Schemas."""


class KeyringError(FieldProtectionError):
    """A keyring cannot be created, read or written (missing file, bad format, wrong mode)."""


class KeyNotHeld(FieldProtectionError):
    """This process does not hold the key a seal or open needs (by design, or misconfiguration)."""


class FieldIntegrityError(FieldProtectionError):
    """A ciphertext failed authentication: altered, truncated, or moved to another row or column."""


class SubjectForgotten(FieldProtectionError):
    """The field's data key was destroyed by ``attest forget``: the value is gone for good."""

    def __init__(self, destroyed_at: datetime | None) -> None:
        when = f" on {destroyed_at:%Y-%m-%d %H:%M:%S %Z}".rstrip() if destroyed_at else ""
        super().__init__(
            "this field belongs to a forgotten subject: its data key was destroyed"
            f"{when} (crypto-shredding), so the value cannot be recovered"
        )
        self.destroyed_at = destroyed_at


class PolicyError(FieldProtectionError):
    """An access policy file is malformed or refers to unknown roles, tiers or fields."""


class AccessRefused(FieldProtectionError):
    """A read was refused before anything was read (no purpose, unknown role, audit unavailable)."""
