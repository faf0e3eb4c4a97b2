"""What crosses the access service's boundary: queries, requests, and the records it returns.

Plus ``TierLimitedKeyring``, the keyring view a single read decrypts with: the service holds
every tier, a read opens only the tiers of the reader's role.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from protection.blind_index import BlindIndexKey
from protection.errors import KeyNotHeld
from protection.keyring import Keyring
from protection.tiers import Tier
from schemas.audit import AuditRecord

FieldState = Literal["public", "clear", "masked", "forgotten", "absent"]


@dataclass(frozen=True)
class ReadQuery:
    """What a reader asks for. The identity is not in here: it comes from the token."""

    purpose: str
    role: str | None = None
    subject: str | None = None
    event_id: str | None = None
    typ: str | None = None
    source: str | None = None
    request_id: str | None = None
    limit: int = 20


@dataclass(frozen=True)
class FieldView:
    name: str
    tier: str
    state: FieldState
    value: Any = None
    note: str | None = None


@dataclass(frozen=True)
class RecordView:
    event_id: str
    typ: str
    source: str
    issued_at: datetime
    department: str
    fields: list[FieldView]


@dataclass(frozen=True)
class ReadResult:
    read_id: str
    role: str
    records: list[RecordView]
    audit: AuditRecord = field(repr=False)


@dataclass(frozen=True)
class NewRequest:
    purpose: str
    typ: str
    subject: str = field(repr=False)
    fields: tuple[str, ...]
    role: str | None = None
    valid_for: timedelta = timedelta(days=7)


class TierLimitedKeyring:
    """A keyring view that opens only ``tiers`` (the read's role), whatever the service holds."""

    def __init__(self, keyring: Keyring, tiers: frozenset[Tier]) -> None:
        self._keyring = keyring
        self._tiers = tiers & keyring.readable_tiers()

    def readable_tiers(self) -> frozenset[Tier]:
        return self._tiers

    def current_version(self, tier: Tier) -> int:
        return self._keyring.current_version(tier)

    def seal_to_tier(self, tier: Tier, secret: bytes, context: bytes) -> bytes:
        return self._keyring.seal_to_tier(tier, secret, context)

    def open_from_tier(self, tier: Tier, sealed: bytes, context: bytes) -> bytes:
        if tier not in self._tiers:
            raise KeyNotHeld(f"this read's role does not hold the {tier.label} tier")
        return self._keyring.open_from_tier(tier, sealed, context)

    def blind_index_key(self, domain: str) -> BlindIndexKey:
        return self._keyring.blind_index_key(domain)
