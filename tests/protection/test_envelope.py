"""Envelope encryption without a database: fields, data keys, tier seals, the protector, the reader."""

from __future__ import annotations

import pickle
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from access.policy import AccessDecision, AccessReason
from protection import envelope
from protection.envelope import (
    DataKey,
    FieldContext,
    WrappingKey,
    open_field,
    seal_field,
    unwrap_data_key,
    wrap_data_key,
)
from protection.errors import (
    AccessRefused,
    FieldIntegrityError,
    KeyNotHeld,
    TierCatalogError,
)
from protection.fields import DataKeyRecord, FieldProtector, SealedBatch, WrappingKeyRecord
from protection.keyring import StaticKeyring, generate_keyring
from protection.reader import FieldReader, KeyRecords, rewrap
from protection.tiers import Tier, protection_catalog
from scenarios.finance import transaction_payloads
from scenarios.government import document_payloads
from schemas.catalog import DOCUMENT_V1, TRANSACTION_V1
from tests.support.events import stored_events

CATALOG = protection_catalog()
CONTEXT = FieldContext("transaction_fields", "amount", "3f1c2a8e-0000-4000-8000-000000000001")
NOW = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def keyring() -> StaticKeyring:
    return generate_keyring(CATALOG.domains)


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# -- field ciphertexts ------------------------------------------------------------------------


def test_a_sealed_field_opens_only_in_its_own_row_and_column() -> None:
    key = DataKey.generate(Tier.CONFIDENTIAL)
    sealed = seal_field(key, b'"1250.00"', CONTEXT)
    assert open_field(key, sealed, CONTEXT) == b'"1250.00"'
    assert b"1250.00" not in sealed
    moved = [
        FieldContext(CONTEXT.table, CONTEXT.column, "3f1c2a8e-0000-4000-8000-000000000002"),
        FieldContext(CONTEXT.table, "counterparty", CONTEXT.row_id),
        FieldContext("document_fields", CONTEXT.column, CONTEXT.row_id),
    ]
    for elsewhere in moved:
        with pytest.raises(FieldIntegrityError, match="failed authentication"):
            open_field(key, sealed, elsewhere)


def test_every_single_bit_flip_is_detected() -> None:
    key = DataKey.generate(Tier.RESTRICTED)
    sealed = seal_field(key, b'"DE89370400440532013000"', CONTEXT)
    for bit in range(len(sealed) * 8):
        with pytest.raises(FieldIntegrityError):
            open_field(key, _flip(sealed, bit), CONTEXT)


def test_truncated_or_foreign_bytes_are_refused() -> None:
    key = DataKey.generate(Tier.INTERNAL)
    sealed = seal_field(key, b'"x"', CONTEXT)
    for broken in (b"", sealed[:20], sealed[:-1], b"\x02" + sealed[1:]):
        with pytest.raises(FieldIntegrityError):
            open_field(key, broken, CONTEXT)


def test_the_ciphertext_names_its_key_version_and_tier() -> None:
    key = DataKey.generate(Tier.CONFIDENTIAL)
    sealed = seal_field(key, b"1", CONTEXT)
    ref = envelope.field_key_ref(sealed)
    assert ref.key_id == key.key_id and ref.tier is Tier.CONFIDENTIAL
    other = DataKey.generate(Tier.CONFIDENTIAL)
    with pytest.raises(FieldIntegrityError, match="another data key"):
        open_field(other, sealed, CONTEXT)


def test_nonces_are_fresh_so_equal_values_do_not_look_equal() -> None:
    key = DataKey.generate(Tier.INTERNAL)
    assert seal_field(key, b'"debit"', CONTEXT) != seal_field(key, b'"debit"', CONTEXT)


def test_row_sealing_equals_field_sealing() -> None:
    key = DataKey.generate(Tier.INTERNAL)
    sealed = envelope.seal_row_fields("t", "r1", [(key, "a", b"1"), (key, "b", b"2")])
    assert open_field(key, sealed[0], FieldContext("t", "a", "r1")) == b"1"
    assert open_field(key, sealed[1], FieldContext("t", "b", "r1")) == b"2"
    with pytest.raises(FieldIntegrityError):
        open_field(key, sealed[1], FieldContext("t", "a", "r1"))


def test_cached_data_keys_hold_no_cipher_object_but_still_seal_and_open() -> None:
    # A writer caches up to 100,000 data keys; a used AESGCM object is ~2.5 KB of native
    # memory, which made a soak's intake grow by ~140 MB. Data keys build theirs per use.
    key = DataKey.generate(Tier.INTERNAL)
    sealed = seal_field(key, b'"debit"', CONTEXT)
    assert key._aead is None
    assert open_field(key, sealed, CONTEXT) == b'"debit"'
    wrapping = WrappingKey.generate(Tier.INTERNAL)
    assert wrapping._aead is not None  # few and hot: kept
    again = unwrap_data_key(wrapping, key.key_id, key.tier, b"subject",
                            wrap_data_key(wrapping, key, b"subject"))
    assert open_field(again, sealed, CONTEXT) == b'"debit"'


# -- data keys and tier seals -------------------------------------------------------------


def test_a_wrapped_data_key_is_bound_to_its_subject_tier_and_wrapping_key() -> None:
    wrapping = WrappingKey.generate(Tier.RESTRICTED)
    key = DataKey.generate(Tier.RESTRICTED)
    subject = b"s" * 32
    wrapped = wrap_data_key(wrapping, key, subject)
    same = unwrap_data_key(wrapping, key.key_id, Tier.RESTRICTED, subject, wrapped)
    assert open_field(same, seal_field(key, b"v", CONTEXT), CONTEXT) == b"v"
    attempts = [
        (wrapping, key.key_id, Tier.RESTRICTED, b"t" * 32, wrapped),      # another subject
        (wrapping, uuid.uuid4(), Tier.RESTRICTED, subject, wrapped),      # another key id
        (WrappingKey.generate(Tier.RESTRICTED), key.key_id, Tier.RESTRICTED, subject, wrapped),
        (wrapping, key.key_id, Tier.RESTRICTED, subject, _flip(wrapped, 100)),
    ]
    for args in attempts:
        with pytest.raises(FieldIntegrityError):
            unwrap_data_key(*args)
    with pytest.raises(FieldIntegrityError):
        unwrap_data_key(wrapping, key.key_id, Tier.CONFIDENTIAL, subject, wrapped)


def test_only_the_tier_private_key_opens_a_sealed_secret(keyring: StaticKeyring) -> None:
    secret = bytes(range(32))
    context = envelope.wrapping_key_context(uuid.uuid4(), Tier.CONFIDENTIAL)
    writer = keyring.restricted_to(())
    sealed = writer.seal_to_tier(Tier.CONFIDENTIAL, secret, context)
    assert envelope.sealed_version(sealed) == 1
    assert keyring.open_from_tier(Tier.CONFIDENTIAL, sealed, context) == secret
    with pytest.raises(KeyNotHeld):
        writer.open_from_tier(Tier.CONFIDENTIAL, sealed, context)
    with pytest.raises(FieldIntegrityError):
        keyring.open_from_tier(Tier.CONFIDENTIAL, sealed, context + b"x")
    with pytest.raises(FieldIntegrityError):
        keyring.open_from_tier(Tier.CONFIDENTIAL, _flip(sealed, 8 * 40), context)
    other = generate_keyring(CATALOG.domains)
    with pytest.raises(FieldIntegrityError):
        other.open_from_tier(Tier.CONFIDENTIAL, sealed, context)


def test_key_objects_never_show_or_pickle_their_material(keyring: StaticKeyring) -> None:
    key = DataKey.generate(Tier.RESTRICTED)
    material = key._material
    index_key = keyring.blind_index_key("national_id")
    for thing in (key, WrappingKey.generate(Tier.INTERNAL), keyring, index_key,
                  keyring.tiers[Tier.RESTRICTED][0], FieldProtector(keyring)):
        text = repr(thing) + str(thing)
        assert material.hex() not in text and index_key.material.hex() not in text
        assert "private_bytes" not in text
    assert index_key.material.hex() not in repr(index_key)
    with pytest.raises(TypeError):
        pickle.dumps(key)


# -- the protector and the reader ----------------------------------------------------------


def _records(batch: SealedBatch) -> KeyRecords:
    return KeyRecords({r.key_id: r for r in batch.data_keys},
                      {r.key_id: r for r in batch.wrapping_keys})


def _allow(typ: str, names: list[str]) -> dict[str, AccessDecision]:
    return {n: AccessDecision(CATALOG.field(typ, n), "test", True, AccessReason.GRANTED, 1)
            for n in names}


def test_the_protector_keeps_public_fields_and_seals_the_rest(keyring: StaticKeyring) -> None:
    protector = FieldProtector(keyring.restricted_to(()))
    payload = transaction_payloads(1, "core-ledger", seed=3, now=NOW)[0]
    batch = protector.seal_batch(stored_events([payload], TRANSACTION_V1))
    sealed = batch.events[0]
    schema = CATALOG.schema(TRANSACTION_V1)
    public = {n for n, f in schema.fields.items() if not f.protected}
    assert set(sealed.public_payload) == public & set(payload)
    assert set(sealed.columns) == set(payload) - public
    assert set(sealed.indexes) == {"account_bidx"}
    assert sealed.table == "transaction_fields" and sealed.department == "core-ledger"
    assert protector.public_payload(TRANSACTION_V1, payload) == sealed.public_payload
    for name, ciphertext in sealed.columns.items():
        assert str(payload[name]).encode() not in ciphertext
    # One data key per tier for this subject, each wrapped; one wrapping key per tier.
    assert sorted(r.tier for r in batch.data_keys) == [Tier.INTERNAL, Tier.CONFIDENTIAL,
                                                       Tier.RESTRICTED]
    assert len(batch.wrapping_keys) == 3


def test_a_field_without_a_tier_is_refused(keyring: StaticKeyring) -> None:
    protector = FieldProtector(keyring.restricted_to(()))
    payload = {**transaction_payloads(1, "core-ledger", seed=3, now=NOW)[0], "surprise": "x"}
    with pytest.raises(TierCatalogError, match="surprise"):
        protector.seal_batch(stored_events([payload], TRANSACTION_V1))
    with pytest.raises(TierCatalogError):
        protector.public_payload(TRANSACTION_V1, payload)


def test_keys_are_per_subject_and_tier_and_replaced_after_their_use_limit(
    keyring: StaticKeyring,
) -> None:
    protector = FieldProtector(keyring.restricted_to(()), max_key_uses=5)
    payloads = document_payloads(6, seed=5, now=NOW)  # 3 people, each at both agencies
    batch = protector.seal_batch(stored_events(payloads, DOCUMENT_V1))
    by_subject: dict[bytes | None, set[uuid.UUID]] = {}
    for record in batch.data_keys:
        by_subject.setdefault(record.subject_ref, set()).add(record.key_id)
    assert len(by_subject) == 3  # the two spellings of a national id are one subject
    confidential_uses = sum(
        1 for e in batch.events for n in e.columns if CATALOG.field(DOCUMENT_V1, n).tier
        is Tier.CONFIDENTIAL)
    confidential_keys = sum(1 for r in batch.data_keys if r.tier is Tier.CONFIDENTIAL)
    assert confidential_keys >= confidential_uses // 5  # no key sealed more than 5 fields


def test_stored_keys_are_reused_until_a_forget_moves_the_epoch(keyring: StaticKeyring) -> None:
    protector = FieldProtector(keyring.restricted_to(()))
    events = stored_events(document_payloads(2, seed=5, now=NOW), DOCUMENT_V1)
    first = protector.seal_batch(events)
    protector.confirm_stored(first)
    again = protector.seal_batch(events)
    assert again.used_data_keys == first.used_data_keys
    assert not again.data_keys and not again.wrapping_keys  # nothing new to store
    # After a forget (the shredding epoch moved) every cached key is dropped and replaced.
    after = protector.seal_batch(events, shredding_epoch=1)
    assert len(after.data_keys) == len(first.data_keys)
    assert after.used_data_keys.isdisjoint(first.used_data_keys)


def test_keys_are_replaced_when_their_cryptoperiod_ends(keyring: StaticKeyring) -> None:
    clock = [NOW]
    protector = FieldProtector(keyring.restricted_to(()), clock=lambda: clock[0],
                               data_key_max_age=timedelta(days=1), data_key_idle=timedelta(days=30))
    payload = transaction_payloads(1, "core-ledger", seed=3, now=NOW)[0]
    first = protector.seal_batch(stored_events([payload], TRANSACTION_V1))
    protector.confirm_stored(first)
    clock[0] = NOW + timedelta(days=2)
    later = protector.seal_batch(stored_events([payload], TRANSACTION_V1))
    assert {r.key_id for r in later.data_keys}.isdisjoint({r.key_id for r in first.data_keys})
    assert len(later.data_keys) == 3


def test_a_data_key_idle_past_its_limit_leaves_memory_and_its_subject_gets_a_new_one(
    keyring: StaticKeyring,
) -> None:
    clock = [NOW]
    protector = FieldProtector(keyring.restricted_to(()), clock=lambda: clock[0],
                               data_key_idle=timedelta(minutes=5))
    busy, quiet = transaction_payloads(2, "core-ledger", seed=4, now=NOW)
    assert busy["account"] != quiet["account"]
    first = protector.seal_batch(stored_events([busy, quiet], TRANSACTION_V1))
    protector.confirm_stored(first)
    assert len(protector._data_keys) == 6  # two subjects, three tiers
    clock[0] = NOW + timedelta(minutes=4)
    kept = protector.seal_batch(stored_events([busy], TRANSACTION_V1))  # busy's keys stay in use
    assert not kept.data_keys
    clock[0] = NOW + timedelta(minutes=6)  # quiet's keys idle 6 minutes, busy's 2
    busy_again = protector.seal_batch(stored_events([busy], TRANSACTION_V1))
    assert not busy_again.data_keys
    assert len(protector._data_keys) == 3  # quiet's keys are gone from memory
    quiet_again = protector.seal_batch(stored_events([quiet], TRANSACTION_V1))
    assert len(quiet_again.data_keys) == 3
    assert quiet_again.used_data_keys.isdisjoint(first.used_data_keys)


def test_a_stored_data_key_keeps_no_record_or_wrapper_in_memory(keyring: StaticKeyring) -> None:
    protector = FieldProtector(keyring.restricted_to(()))
    batch = protector.seal_batch(stored_events(transaction_payloads(1, "core-ledger", seed=6, now=NOW),
                                               TRANSACTION_V1))
    assert all(e.record is not None for e in protector._data_keys.values())
    protector.confirm_stored(batch)
    assert all(e.record is None and e.wrapper is None for e in protector._data_keys.values())
    assert all(e.record is not None for e in protector._wrapping_keys.values())


def test_the_writer_cannot_read_and_a_reader_reads_only_its_tiers(keyring: StaticKeyring) -> None:
    payload = transaction_payloads(1, "core-ledger", seed=4, now=NOW)[0]
    batch = FieldProtector(keyring.restricted_to(())).seal_batch(stored_events([payload], TRANSACTION_V1))
    sealed, keys = batch.events[0], _records(batch)
    names = ["amount", "account"]
    ciphertexts = {n: sealed.columns[n] for n in names}
    with pytest.raises(KeyNotHeld):
        FieldReader(keyring.restricted_to(())).open_fields(
            TRANSACTION_V1, sealed.event_id, ciphertexts, _allow(TRANSACTION_V1, names), keys)
    confidential_only = FieldReader(keyring.restricted_to({Tier.CONFIDENTIAL}))
    opened = confidential_only.open_fields(TRANSACTION_V1, sealed.event_id,
                                           {"amount": ciphertexts["amount"]},
                                           _allow(TRANSACTION_V1, ["amount"]), keys,
                                           department=sealed.department)
    assert opened["amount"].value == payload["amount"]
    with pytest.raises(KeyNotHeld):
        confidential_only.open_fields(TRANSACTION_V1, sealed.event_id,
                                      {"account": ciphertexts["account"]},
                                      _allow(TRANSACTION_V1, ["account"]), keys)


def test_the_reader_opens_nothing_the_policy_did_not_allow(keyring: StaticKeyring) -> None:
    payload = transaction_payloads(1, "core-ledger", seed=4, now=NOW)[0]
    batch = FieldProtector(keyring.restricted_to(())).seal_batch(stored_events([payload], TRANSACTION_V1))
    sealed = batch.events[0]
    masked = {"amount": AccessDecision(CATALOG.field(TRANSACTION_V1, "amount"), "r", False,
                                       AccessReason.NOT_GRANTED)}
    for decisions in ({}, masked, _allow(TRANSACTION_V1, ["memo"])):
        with pytest.raises(AccessRefused):
            FieldReader(keyring).open_fields(TRANSACTION_V1, sealed.event_id,
                                             {"amount": sealed.columns["amount"]}, decisions,
                                             _records(batch))


def test_a_ciphertext_moved_to_another_row_or_column_fails_loudly(keyring: StaticKeyring) -> None:
    payloads = transaction_payloads(2, "core-ledger", seed=8, now=NOW)
    payloads[1]["account"] = payloads[0]["account"]  # same subject: the same data keys
    batch = FieldProtector(keyring.restricted_to(())).seal_batch(stored_events(payloads, TRANSACTION_V1))
    first, second = batch.events
    reader, keys = FieldReader(keyring), _records(batch)
    allowed = _allow(TRANSACTION_V1, ["amount", "counterparty", "memo"])
    with pytest.raises(FieldIntegrityError, match="another row or column"):
        reader.open_fields(TRANSACTION_V1, second.event_id,
                           {"amount": first.columns["amount"]}, allowed, keys,
                           department=second.department)
    with pytest.raises(FieldIntegrityError, match="another row or column"):
        reader.open_fields(TRANSACTION_V1, first.event_id,
                           {"counterparty": first.columns["memo"]}, allowed, keys,
                           department=first.department)
    with pytest.raises(FieldIntegrityError, match="claims tier"):
        reader.open_fields(TRANSACTION_V1, first.event_id,
                           {"amount": first.columns["reference"]}, allowed, keys)


def test_a_destroyed_data_key_reads_as_forgotten(keyring: StaticKeyring) -> None:
    payload = document_payloads(1, seed=9, now=NOW)[0]
    batch = FieldProtector(keyring.restricted_to(())).seal_batch(stored_events([payload], DOCUMENT_V1))
    sealed = batch.events[0]
    gone = datetime(2026, 3, 15, tzinfo=UTC)
    tombstones = {r.key_id: DataKeyRecord(r.key_id, r.tier, r.subject_domain, None, None, None, gone)
                  for r in batch.data_keys}
    keys = KeyRecords(tombstones, {r.key_id: r for r in batch.wrapping_keys})
    opened = FieldReader(keyring).open_fields(DOCUMENT_V1, sealed.event_id,
                                              {"income": sealed.columns["income"]},
                                              _allow(DOCUMENT_V1, ["income"]), keys)
    assert opened["income"].value is None
    assert "forgotten subject" in (opened["income"].forgotten or "")
    assert "cannot be recovered" in (opened["income"].forgotten or "")


def test_rewrapping_moves_wrapping_keys_to_the_new_version(keyring: StaticKeyring) -> None:
    payload = transaction_payloads(1, "core-ledger", seed=12, now=NOW)[0]
    batch = FieldProtector(keyring.restricted_to(())).seal_batch(stored_events([payload], TRANSACTION_V1))
    rotated = keyring.with_new_version(Tier.RESTRICTED)
    old = next(r for r in batch.wrapping_keys if r.tier is Tier.RESTRICTED)
    fresh = rewrap(rotated, old)
    assert (old.kek_version, fresh.kek_version) == (1, 2) and fresh.sealed != old.sealed
    # Without version 1 at all, the re-wrapped key still opens the untouched field.
    only_new = StaticKeyring({**rotated.tiers, Tier.RESTRICTED: rotated.tiers[Tier.RESTRICTED][1:]},
                             rotated.index_keys)
    keys = KeyRecords({r.key_id: r for r in batch.data_keys},
                      {**{r.key_id: r for r in batch.wrapping_keys}, fresh.key_id: fresh})
    sealed = batch.events[0]
    opened = FieldReader(only_new).open_fields(TRANSACTION_V1, sealed.event_id,
                                               {"account": sealed.columns["account"]},
                                               _allow(TRANSACTION_V1, ["account"]), keys,
                                               department=sealed.department)
    assert opened["account"].value == payload["account"]
    stale = WrappingKeyRecord(old.key_id, old.tier, 2, old.sealed)  # version column lies
    with pytest.raises(FieldIntegrityError):
        FieldReader(only_new).open_fields(
            TRANSACTION_V1, sealed.event_id, {"account": sealed.columns["account"]},
            _allow(TRANSACTION_V1, ["account"]),
            KeyRecords(keys.data_keys, {**keys.wrapping_keys, old.key_id: stale}))
