"""Issue 14, item 7: the hash that tells a redelivery from a replay is keyed.

``events.message_mac`` is HMAC-SHA256 under a key derived (HKDF, fixed label) from the
worker's ``account`` blind-index key; the plain SHA-256 of the message is no longer stored,
so a database dump cannot be matched against captured or guessed Kafka messages.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import uuid

import pytest
from sqlalchemy import text

from protection.blind_index import (
    MESSAGE_MAC_DOMAIN,
    BlindIndexKey,
    blind_index,
    message_mac,
    message_mac_key,
)
from protection.fields import FieldProtector
from protection.keyring import generate_keyring
from protection.tiers import protection_catalog
from scenarios.finance import transaction_payloads
from schemas.catalog import TRANSACTION_V1
from storage.db import engine_for
from storage.events import already_stored, protector_message_key, store_events
from tests.support.events import stored_event

KEYRING = generate_keyring(protection_catalog().domains)
PROTECTOR = FieldProtector(KEYRING.restricted_to(()))
KEY = message_mac_key(KEYRING.blind_index_key(MESSAGE_MAC_DOMAIN))


def test_the_message_mac_is_an_hmac_under_a_key_derived_from_the_index_key() -> None:
    digest = hashlib.sha256(b"a signed message").digest()
    mac = message_mac(KEY, digest)
    assert mac != digest and len(mac) == 32
    assert mac == hmac.digest(KEY.material, b"attest.message-mac.v1\x00" + digest, hashlib.sha256)
    # Not the index key itself, and no blind index of anything equals it by construction.
    index_key = KEYRING.blind_index_key(MESSAGE_MAC_DOMAIN)
    assert KEY.material != index_key.material
    assert mac != blind_index(index_key, digest.hex())
    other = message_mac_key(BlindIndexKey(MESSAGE_MAC_DOMAIN, os.urandom(32)))
    assert message_mac(other, digest) != mac
    assert "material" not in repr(KEY) and KEY.material.hex() not in repr(KEY)
    with pytest.raises(ValueError):
        message_mac_key(KEYRING.blind_index_key("national_id"))
    with pytest.raises(ValueError):
        message_mac(KEY, b"not a sha-256")


def test_storage_finds_the_key_of_the_protector_intake_hands_it() -> None:
    assert protector_message_key(PROTECTOR).material == KEY.material


@pytest.mark.integration
def test_stored_rows_hold_the_mac_and_replays_are_still_told_from_redeliveries(
    database_url: str,
) -> None:
    payload = transaction_payloads(1, "core-ledger", seed=uuid.uuid4().int % 10**6)[0]
    topic, message = f"test.{uuid.uuid4().hex[:8]}", b"the signed bytes " + os.urandom(8)
    event = stored_event(payload, TRANSACTION_V1, topic=topic, offset=7, message=message)
    first = store_events(database_url, [event], protector=PROTECTOR)
    assert first.inserted == {payload["event_id"]}

    with engine_for(database_url).connect() as conn:
        row = conn.execute(text("SELECT message_sha256, message_mac FROM events WHERE event_id = :id"),
                           {"id": payload["event_id"]}).one()
    digest = hashlib.sha256(message).digest()
    assert row.message_sha256 is None
    assert bytes(row.message_mac) != digest
    assert bytes(row.message_mac) == message_mac(KEY, digest)

    # The same bytes at the same position: our own redelivery. Other bytes there: a replay.
    again = store_events(database_url, [event], protector=PROTECTOR)
    assert again.redelivered == {payload["event_id"]} and not again.replayed
    forged = stored_event(payload, TRANSACTION_V1, topic=topic, offset=7, message=b"other bytes")
    replay = store_events(database_url, [forged], protector=PROTECTOR)
    assert replay.replayed == {payload["event_id"]} and not replay.redelivered

    same = (payload["event_id"], topic, 0, 7, digest)
    other = (payload["event_id"], topic, 0, 7, hashlib.sha256(b"other bytes").digest())
    assert already_stored(database_url, [same, other], message_key=KEY) == {same}
    # A worker with other index keys cannot confirm the bytes.
    stranger = message_mac_key(BlindIndexKey(MESSAGE_MAC_DOMAIN, os.urandom(32)))
    assert already_stored(database_url, [same], message_key=stranger) == set()
