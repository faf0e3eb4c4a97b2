"""Re-wrapping data keys under new wrapping keys: the crypto of ``attest keys rotate-kek``.

Resealing a wrapping key to a new tier key version leaves its secret unchanged, so whoever
took the old version's private key (and a copy of the sealed wrapping keys) still opens every
data key under it. Rotation therefore mints *new* wrapping keys, sealed to the new version,
and re-wraps each data key under one of them; the old wrapping keys are then deleted. Data
keys themselves do not change, so no field ciphertext is rewritten.

Pure functions of keys and records: no SQL here (``storage.key_maintenance`` feeds batches in
and writes them back, one transaction each).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from protection import envelope
from protection.envelope import WrappingKey
from protection.errors import FieldIntegrityError, KeyringError
from protection.fields import DataKeyRecord, WrappingKeyRecord, mint_wrapping_key
from protection.keyring import Keyring
from protection.tiers import Tier


@dataclass(frozen=True)
class RewrappedBatch:
    """One batch's result: the new wrapping key to store, and each data key's new wrapped form."""

    wrapping_key: WrappingKeyRecord
    wrapped: Mapping[uuid.UUID, bytes] = field(repr=False)


def open_wrapping_key(keyring: Keyring, record: WrappingKeyRecord) -> WrappingKey:
    """Open a stored wrapping key with the tier's private key of the version sealed inside it."""
    if envelope.sealed_version(record.sealed) != record.kek_version:
        raise FieldIntegrityError(f"wrapping key {record.key_id} names the wrong key version")
    secret = keyring.open_from_tier(record.tier, record.sealed,
                                    envelope.wrapping_key_context(record.key_id, record.tier))
    return envelope.wrapping_key_from_secret(record.key_id, record.tier, secret)


class Rewrapper:
    """Moves data keys of one tier from old wrapping keys to new ones sealed to ``target``.

    ``keyring`` must hold the private keys of the old versions (to open the old wrapping keys)
    and have ``target`` as the tier's current version (new wrapping keys are sealed to it).
    Old wrapping keys are opened once and kept in this object only while the rotation runs.
    """

    def __init__(self, keyring: Keyring, tier: Tier, target: int) -> None:
        if keyring.current_version(tier) != target:
            raise KeyringError(f"the keyring's current {tier.label} version is "
                               f"v{keyring.current_version(tier)}, not v{target}")
        self._keyring = keyring
        self._tier = tier
        self._target = target
        self._opened: dict[uuid.UUID, WrappingKey] = {}

    def __repr__(self) -> str:
        return f"Rewrapper(tier={self._tier.label}, target=v{self._target})"

    def __call__(
        self, data_keys: Sequence[DataKeyRecord], old: Mapping[uuid.UUID, WrappingKeyRecord]
    ) -> RewrappedBatch:
        """Mint one wrapping key for the batch and re-wrap every data key of it under that key.

        Raises ``FieldIntegrityError`` for a data key or wrapping key that fails
        authentication (the batch is then not written), ``KeyNotHeld`` for a version the
        keyring no longer holds.
        """
        new_key, new_record = mint_wrapping_key(self._keyring, self._tier)
        if new_record.kek_version != self._target:
            raise KeyringError(f"a new {self._tier.label} wrapping key was sealed to "
                               f"v{new_record.kek_version}, not v{self._target}")
        wrapped: dict[uuid.UUID, bytes] = {}
        for record in data_keys:
            if (record.tier is not self._tier or record.wrapped is None
                    or record.subject_ref is None or record.wrapping_key_id is None):
                raise FieldIntegrityError(f"data key {record.key_id} cannot be re-wrapped "
                                          "(another tier, or destroyed)")
            old_key = self._old(record.wrapping_key_id, old)
            data_key = envelope.unwrap_data_key(old_key, record.key_id, self._tier,
                                                record.subject_ref, record.wrapped)
            wrapped[record.key_id] = envelope.wrap_data_key(new_key, data_key, record.subject_ref)
        return RewrappedBatch(new_record, wrapped)

    def _old(self, key_id: uuid.UUID, old: Mapping[uuid.UUID, WrappingKeyRecord]) -> WrappingKey:
        key = self._opened.get(key_id)
        if key is None:
            record = old.get(key_id)
            if record is None or record.tier is not self._tier:
                raise FieldIntegrityError(f"wrapping key {key_id} is missing or of another tier")
            key = self._opened[key_id] = open_wrapping_key(self._keyring, record)
        return key
