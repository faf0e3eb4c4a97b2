"""Envelope encryption primitives: fields under data keys, data keys under tier keys.

Built on ``cryptography`` (OpenSSL's AES-GCM, X25519, HKDF) rather than Tink: it is already
the project's one crypto dependency (signatures use it), it has the asymmetric pieces the
write-only worker design needs, and Tink's Python package would add protobuf keysets and a
second key format for the same primitives. We keep Tink's discipline instead: callers seal
and open; they never choose a nonce, a mode or a key version, and every ciphertext names the
key that made it.

Three layers (docs/security.md has the picture):

``seal_field`` / ``open_field``
    AES-256-GCM under a per-subject, per-tier *data key* (DEK). The 96-bit nonce is random.
    The associated data binds the format byte, the tier, the data key id (the key version),
    the table, the column and the row id, so a ciphertext copied to another row or column,
    or altered in one bit, fails to open. Format 2 (what the writer seals since key binding,
    issue 14) also binds the row's schema (``typ``) and department (``field_scope``), so a row
    moved to another department fails to open; format 1 ciphertexts stored earlier open as
    they always did.

``wrap_data_key`` / ``unwrap_data_key``
    AES-256-GCM of a DEK under a *wrapping key* (WK), binding the DEK id, tier, subject
    and WK id. A writer process mints one WK per tier and reuses it for many DEKs.

``seal_to_tier`` / ``open_from_tier``
    An HPKE-style sealed box of a WK to a tier's X25519 public key (ephemeral X25519,
    HKDF-SHA256 over the shared secret and both public keys, AES-256-GCM). Writers hold only
    public keys, so a worker can store protected fields it cannot read back; readers hold
    the private keys of the tiers their role may read.
"""

from __future__ import annotations

import os
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Self

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from protection.errors import FieldIntegrityError
from protection.tiers import Tier

FORMAT_V1 = 1
#: A field ciphertext whose associated data also binds its row's schema and department.
FORMAT_V2 = 2
FIELD_FORMATS = (FORMAT_V1, FORMAT_V2)
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
ID_BYTES = 16
X25519_BYTES = 32

# field ciphertext: format(1) | tier(1) | data key id(16) | nonce(12) | ciphertext+tag
_FIELD_HEADER = 1 + 1 + ID_BYTES
# wrapped DEK: format(1) | nonce(12) | ciphertext(32)+tag(16)
_WRAPPED_BYTES = 1 + NONCE_BYTES + KEY_BYTES + TAG_BYTES
# sealed WK: format(1) | kek version(4) | ephemeral public key(32) | nonce(12) | ct(32)+tag(16)
_SEAL_HEADER = 1 + 4 + X25519_BYTES
_SEALED_BYTES = _SEAL_HEADER + NONCE_BYTES + KEY_BYTES + TAG_BYTES


def _lp(text: str | bytes) -> bytes:
    """Length-prefixed bytes, so no two different contexts encode to the same AAD."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    return struct.pack(">H", len(data)) + data


class _SymmetricKey:
    """An AES-256-GCM key with an id and a tier. Never printed, never compared by value."""

    __slots__ = ("key_id", "tier", "_material", "_aead", "_header", "_header_v2")

    #: Whether the key holds its cipher object. A used AESGCM object costs ~2.5 KB of native
    #: memory; writers cache up to ``DATA_KEY_CACHE`` (100,000) data keys, which was ~250 MB
    #: and most of an intake process's growth in the soak (docs/reliability.md). A data key
    #: builds its cipher per use instead (~3 µs per field); the few wrapping keys keep theirs.
    _KEEPS_CIPHER = True

    def __init__(self, key_id: uuid.UUID, tier: Tier, material: bytes) -> None:
        if len(material) != KEY_BYTES:
            raise ValueError(f"{type(self).__name__} material must be {KEY_BYTES} bytes")
        if tier is Tier.PUBLIC:
            raise ValueError("public fields are not encrypted")
        self.key_id = key_id
        self.tier = tier
        self._material = material
        self._aead = AESGCM(material) if self._KEEPS_CIPHER else None
        # The field ciphertext header: format, tier, key id (the key version of the field).
        self._header = bytes((FORMAT_V1, int(tier))) + key_id.bytes
        self._header_v2 = bytes((FORMAT_V2, int(tier))) + key_id.bytes

    def _cipher(self) -> AESGCM:
        return self._aead if self._aead is not None else AESGCM(self._material)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(key_id={self.key_id}, tier={self.tier.label})"

    __str__ = __repr__

    def __reduce__(self) -> object:
        raise TypeError(f"{type(self).__name__} cannot be pickled")

    @classmethod
    def generate(cls, tier: Tier) -> Self:
        """A fresh random key with a fresh random id."""
        return cls(uuid.uuid4(), tier, os.urandom(KEY_BYTES))


class DataKey(_SymmetricKey):
    """A data key: encrypts the fields of one subject in one tier."""

    _KEEPS_CIPHER = False


class WrappingKey(_SymmetricKey):
    """A writer's wrapping key for one tier: encrypts data keys, is itself sealed to the tier."""

    def secret_for_sealing(self) -> bytes:
        """The raw key, only to be sealed to the tier's public key (``seal_to_tier``)."""
        return self._material


@dataclass(frozen=True, slots=True)
class FieldContext:
    """Where a field ciphertext lives; bound into its associated data."""

    table: str
    column: str
    row_id: str
    #: ``field_scope(typ, department)`` of the row: given, a field is sealed as format 2 and
    #: opening it checks the row's schema and department; ``None`` seals format 1.
    scope: bytes | None = None


@lru_cache(maxsize=4096)
def field_scope(typ: str, department: str) -> bytes:
    """The part of a format-2 field's associated data that names its row's schema and
    department (the row's ``department`` column, which row-level security filters on)."""
    return _lp("attest.field-scope.v2") + _lp(typ) + _lp(department)


@lru_cache(maxsize=1024)
def column_label(table: str, column: str) -> bytes:
    """The part of a field's associated data that names its table and column."""
    return _lp("attest.field.v1") + _lp(table) + _lp(column)


def _field_aad(header: bytes, context: FieldContext) -> bytes:
    aad = header + column_label(context.table, context.column) + _lp(context.row_id)
    if header[0] == FORMAT_V2:
        if context.scope is None:
            raise FieldIntegrityError(
                f"{context.table}.{context.column} of row {context.row_id} is bound to its "
                "row's schema and department, and they were not given")
        aad += context.scope
    return aad


def seal_field(key: DataKey, plaintext: bytes, context: FieldContext) -> bytes:
    """Encrypt one field value for one row and column under ``key``."""
    return seal_row_fields(context.table, context.row_id, [(key, context.column, plaintext)],
                           context.scope)[0]


def seal_row_fields(
    table: str, row_id: str, fields: Sequence[tuple[DataKey, str, bytes]],
    scope: bytes | None = None,
) -> list[bytes]:
    """``seal_field`` for several (key, column, plaintext) of one row: one nonce draw, one row label.

    The result is exactly what ``seal_field`` gives for each field.
    """
    return seal_labelled(row_id, [(key, column_label(table, column), plaintext)
                                  for key, column, plaintext in fields], scope)


def seal_labelled(
    row_id: str, fields: Sequence[tuple[DataKey, bytes, bytes]], scope: bytes | None = None
) -> list[bytes]:
    """The storage hot path: (key, ``column_label(table, column)``, plaintext) of one row;
    with ``scope`` (``field_scope(typ, department)``) format 2, else format 1."""
    row = _lp(row_id) if scope is None else _lp(row_id) + scope
    nonces = os.urandom(NONCE_BYTES * len(fields))
    out = []
    at = 0
    for key, label, plaintext in fields:
        header = key._header if scope is None else key._header_v2
        nonce = nonces[at:at + NONCE_BYTES]
        at += NONCE_BYTES
        out.append(header + nonce + key._cipher().encrypt(nonce, plaintext, header + label + row))
    return out


@dataclass(frozen=True, slots=True)
class FieldKeyRef:
    """What a field ciphertext says about the key that sealed it (unauthenticated until opened)."""

    tier: Tier
    key_id: uuid.UUID


def field_key_ref(ciphertext: bytes) -> FieldKeyRef:
    """The tier and data key id in a field ciphertext's header."""
    if (len(ciphertext) < _FIELD_HEADER + NONCE_BYTES + TAG_BYTES
            or ciphertext[0] not in FIELD_FORMATS):
        raise FieldIntegrityError("not an Attest field ciphertext (wrong format or length)")
    try:
        tier = Tier(ciphertext[1])
    except ValueError:
        raise FieldIntegrityError("the field ciphertext names an unknown tier") from None
    return FieldKeyRef(tier, uuid.UUID(bytes=bytes(ciphertext[2:_FIELD_HEADER])))


def open_field(key: DataKey, ciphertext: bytes, context: FieldContext) -> bytes:
    """Decrypt a field; raises ``FieldIntegrityError`` unless it is exactly what was sealed here."""
    ref = field_key_ref(ciphertext)
    if ref.key_id != key.key_id or ref.tier is not key.tier:
        raise FieldIntegrityError("the field ciphertext was sealed under another data key")
    header = bytes(ciphertext[:_FIELD_HEADER])
    nonce = bytes(ciphertext[_FIELD_HEADER:_FIELD_HEADER + NONCE_BYTES])
    body = bytes(ciphertext[_FIELD_HEADER + NONCE_BYTES:])
    try:
        return key._cipher().decrypt(nonce, body, _field_aad(header, context))
    except InvalidTag:
        raise FieldIntegrityError(
            f"{context.table}.{context.column} of row {context.row_id} failed authentication: "
            "the ciphertext was altered or belongs to another row or column"
            + (" (or the row was moved to another department)" if header[0] == FORMAT_V2 else "")
        ) from None


def _data_key_aad(key_id: uuid.UUID, tier: Tier, subject_ref: bytes, wrapping: WrappingKey) -> bytes:
    return (bytes((FORMAT_V1,)) + _lp("attest.data-key.v1") + key_id.bytes + bytes((int(tier),))
            + _lp(subject_ref) + wrapping.key_id.bytes)


def wrap_data_key(wrapping: WrappingKey, key: DataKey, subject_ref: bytes) -> bytes:
    """The data key encrypted under a wrapping key of the same tier, bound to its subject."""
    if wrapping.tier is not key.tier:
        raise ValueError("a data key is wrapped by a wrapping key of its own tier")
    nonce = os.urandom(NONCE_BYTES)
    aad = _data_key_aad(key.key_id, key.tier, subject_ref, wrapping)
    return bytes((FORMAT_V1,)) + nonce + wrapping._cipher().encrypt(nonce, key._material, aad)


def unwrap_data_key(
    wrapping: WrappingKey, key_id: uuid.UUID, tier: Tier, subject_ref: bytes, wrapped: bytes
) -> DataKey:
    """Recover a data key; any change to it, its id, tier, subject or wrapping key fails."""
    if len(wrapped) != _WRAPPED_BYTES or wrapped[0] != FORMAT_V1 or wrapping.tier is not tier:
        raise FieldIntegrityError(f"data key {key_id} is malformed or filed under the wrong tier")
    aad = _data_key_aad(key_id, tier, subject_ref, wrapping)
    try:
        material = wrapping._cipher().decrypt(bytes(wrapped[1:13]), bytes(wrapped[13:]), aad)
    except InvalidTag:
        raise FieldIntegrityError(f"data key {key_id} failed authentication") from None
    return DataKey(key_id, tier, material)


# -- sealing to a tier's X25519 key (HPKE-style base mode) ----------------------------------


def _raw_public(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _seal_key(shared: bytes, ephemeral: bytes, recipient: bytes, tier: Tier, version: int,
              context: bytes) -> bytes:
    info = b"attest.tier-seal.v1" + bytes((int(tier),)) + struct.pack(">I", version) + _lp(context)
    return HKDF(hashes.SHA256(), KEY_BYTES, salt=ephemeral + recipient, info=info).derive(shared)


def seal_to_tier(
    public_key: X25519PublicKey, tier: Tier, version: int, secret: bytes, context: bytes
) -> bytes:
    """Seal a 32-byte secret so only the holder of the tier's private key ``version`` opens it."""
    if len(secret) != KEY_BYTES:
        raise ValueError(f"only {KEY_BYTES}-byte secrets are sealed to a tier")
    ephemeral = X25519PrivateKey.generate()
    enc = _raw_public(ephemeral.public_key())
    key = _seal_key(ephemeral.exchange(public_key), enc, _raw_public(public_key), tier, version,
                    context)
    header = bytes((FORMAT_V1,)) + struct.pack(">I", version) + enc
    nonce = os.urandom(NONCE_BYTES)
    return header + nonce + AESGCM(key).encrypt(nonce, secret, header + _lp(context))


def sealed_version(sealed: bytes) -> int:
    """The tier key version a sealed secret was made for."""
    if len(sealed) != _SEALED_BYTES or sealed[0] != FORMAT_V1:
        raise FieldIntegrityError("not an Attest sealed key (wrong format or length)")
    return int(struct.unpack(">I", sealed[1:5])[0])


def open_from_tier(private_key: X25519PrivateKey, tier: Tier, sealed: bytes, context: bytes) -> bytes:
    """Open a sealed secret with the tier's private key of the version named inside it."""
    version = sealed_version(sealed)
    header, enc = bytes(sealed[:_SEAL_HEADER]), bytes(sealed[5:_SEAL_HEADER])
    nonce, body = bytes(sealed[_SEAL_HEADER:_SEAL_HEADER + NONCE_BYTES]), bytes(
        sealed[_SEAL_HEADER + NONCE_BYTES:])
    try:
        peer = X25519PublicKey.from_public_bytes(enc)
        shared = private_key.exchange(peer)
    except ValueError:
        raise FieldIntegrityError("the sealed key's ephemeral public key is invalid") from None
    key = _seal_key(shared, enc, _raw_public(private_key.public_key()), tier, version, context)
    try:
        return AESGCM(key).decrypt(nonce, body, header + _lp(context))
    except InvalidTag:
        raise FieldIntegrityError(
            f"a {tier.label} wrapping key failed authentication (altered, or sealed to another key)"
        ) from None


def wrapping_key_context(key_id: uuid.UUID, tier: Tier) -> bytes:
    """The context a wrapping key is sealed under: its own id and tier."""
    return b"attest.wrapping-key.v1" + key_id.bytes + bytes((int(tier),))


def wrapping_key_from_secret(key_id: uuid.UUID, tier: Tier, secret: bytes) -> WrappingKey:
    """Rebuild a wrapping key opened from its sealed form."""
    return WrappingKey(key_id, tier, secret)
