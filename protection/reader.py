"""The reader's side of field protection: opening sealed fields with tier private keys, rewrapping."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from access.policy import AccessDecision
from protection import envelope
from protection.envelope import DataKey, FieldContext, WrappingKey
from protection.errors import (
    AccessRefused,
    FieldIntegrityError,
    KeyNotHeld,
    SubjectForgotten,
)
from protection.fields import DataKeyRecord, WrappingKeyRecord
from protection.keyring import Keyring
from protection.tiers import ProtectionCatalog, Tier, protection_catalog

# -- reading -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldReading:
    """One opened field: its value, or why it has none (``forgotten`` says so in words)."""

    name: str
    value: Any = None
    forgotten: str | None = None


@dataclass(frozen=True)
class KeyRecords:
    """The stored key records a read needs, by id (storage loads them)."""

    data_keys: Mapping[uuid.UUID, DataKeyRecord]
    wrapping_keys: Mapping[uuid.UUID, WrappingKeyRecord]


class FieldReader:
    """Opens protected fields that an ``AccessDecision`` allowed, with the tiers its keyring holds."""

    def __init__(self, keyring: Keyring, catalog: ProtectionCatalog | None = None) -> None:
        self._keyring = keyring
        self._catalog = catalog or protection_catalog()
        self._wrapping: dict[uuid.UUID, WrappingKey] = {}
        self._data: dict[uuid.UUID, DataKey] = {}

    def __repr__(self) -> str:
        return f"FieldReader(keyring={self._keyring!r})"

    @staticmethod
    def key_ids(ciphertexts: Iterable[bytes | None]) -> set[uuid.UUID]:
        """The data keys these ciphertexts name (what storage must load)."""
        return {envelope.field_key_ref(c).key_id for c in ciphertexts if c is not None}

    def open_fields(
        self,
        typ: str,
        event_id: str,
        ciphertexts: Mapping[str, bytes | None],
        decisions: Mapping[str, AccessDecision],
        keys: KeyRecords,
        department: str | None = None,
    ) -> dict[str, FieldReading]:
        """Open each ciphertext whose field ``decisions`` allow; anything else is refused.

        ``department`` is the row's ``department`` column: fields sealed since key binding
        (format 2) are bound to it and to ``typ``, and do not open without it.
        Raises ``FieldIntegrityError`` for a ciphertext that was altered or moved (to another
        row, column or department), and ``AccessRefused`` when asked to open a field no
        decision allowed.
        """
        schema = self._catalog.schema(typ)
        scope = envelope.field_scope(typ, department) if department is not None else None
        out: dict[str, FieldReading] = {}
        for name, ciphertext in ciphertexts.items():
            spec = schema.field(name)
            decision = decisions.get(name)
            if (decision is None or not decision.allowed or decision.field != spec):
                raise AccessRefused(f"{typ}.{name} was not allowed by the access policy")
            if ciphertext is None:
                out[name] = FieldReading(name)
                continue
            ref = envelope.field_key_ref(ciphertext)
            if ref.tier is not spec.tier:
                raise FieldIntegrityError(
                    f"{schema.table}.{name} of row {event_id} claims tier {ref.tier.label}, "
                    f"but the field is {spec.tier.label}")
            try:
                key = self._open_data_key(ref.key_id, ref.tier, keys)
            except SubjectForgotten as gone:
                out[name] = FieldReading(name, forgotten=str(gone))
                continue
            plaintext = envelope.open_field(key, ciphertext,
                                            FieldContext(schema.table, name, event_id, scope))
            out[name] = FieldReading(name, json.loads(plaintext))
        return out

    def _open_data_key(self, key_id: uuid.UUID, tier: Tier, keys: KeyRecords) -> DataKey:
        cached = self._data.get(key_id)
        if cached is not None:
            return cached
        record = keys.data_keys.get(key_id)
        if record is None:
            raise FieldIntegrityError(f"data key {key_id} is not in the database")
        if record.destroyed_at is not None or record.wrapped is None:
            raise SubjectForgotten(record.destroyed_at)
        if record.tier is not tier or record.wrapping_key_id is None or record.subject_ref is None:
            raise FieldIntegrityError(f"data key {key_id} is filed under the wrong tier")
        wrapping = self._open_wrapping_key(record.wrapping_key_id, tier, keys)
        key = envelope.unwrap_data_key(wrapping, key_id, tier, record.subject_ref, record.wrapped)
        self._data[key_id] = key
        return key

    def _open_wrapping_key(self, key_id: uuid.UUID, tier: Tier, keys: KeyRecords) -> WrappingKey:
        cached = self._wrapping.get(key_id)
        if cached is not None:
            return cached
        record = keys.wrapping_keys.get(key_id)
        if record is None or record.tier is not tier:
            raise FieldIntegrityError(f"wrapping key {key_id} is missing or of another tier")
        if tier not in self._keyring.readable_tiers():
            raise KeyNotHeld(f"this process does not hold the {tier.label} key-encryption key")
        if envelope.sealed_version(record.sealed) != record.kek_version:
            raise FieldIntegrityError(f"wrapping key {key_id} names the wrong key version")
        secret = self._keyring.open_from_tier(
            tier, record.sealed, envelope.wrapping_key_context(key_id, tier))
        key = envelope.wrapping_key_from_secret(key_id, tier, secret)
        self._wrapping[key_id] = key
        return key


def rewrap(keyring: Keyring, record: WrappingKeyRecord) -> WrappingKeyRecord:
    """Reseal a wrapping key to its tier's current key version. Data keys and fields are untouched."""
    context = envelope.wrapping_key_context(record.key_id, record.tier)
    secret = keyring.open_from_tier(record.tier, record.sealed, context)
    sealed = keyring.seal_to_tier(record.tier, secret, context)
    return WrappingKeyRecord(record.key_id, record.tier, envelope.sealed_version(sealed), sealed)


