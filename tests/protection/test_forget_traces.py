"""Issue 14, item 7: forgetting leaves no traces in the model's labels or the forget record."""

from __future__ import annotations

import uuid

import pytest

from inference.labels import LabelToSeal, label_protector
from protection.fields import FieldProtector, subject_reference
from protection.keyring import StaticKeyring
from protection.tiers import protection_catalog
from scenarios.finance import transaction_payloads
from schemas.catalog import TRANSACTION_V1
from storage.events import store_events
from storage.inferences import inferences_for, store_inferences
from storage.key_maintenance import forget_subject
from tests.protection.conftest import stored

pytestmark = pytest.mark.integration


def test_forgetting_a_subject_deletes_the_labels_read_from_its_events(
    database_url: str, keyring: StaticKeyring, protector: FieldProtector,
) -> None:
    account = f"DE{uuid.uuid4().int % 10**20:020d}"
    mine, other = transaction_payloads(2, "core-ledger", seed=uuid.uuid4().int % 10**6)
    mine["account"] = account
    store_events(database_url, stored([mine, other], TRANSACTION_V1), protector=protector)
    labels = [LabelToSeal(p["event_id"], TRANSACTION_V1, "transaction_category", "m@1",
                          p["account"], p["source"], "salary", 0.9) for p in (mine, other)]
    assert store_inferences(database_url, labels, label_protector(keyring.restricted_to(()))) == 2

    refs = {"account": subject_reference(keyring, "account", account)}
    outcome = forget_subject(database_url, refs, protection_catalog(), before_commit=lambda o: None)
    assert outcome.inferences == 1
    assert inferences_for(database_url, mine["event_id"]) == []
    assert [r.task for r in inferences_for(database_url, other["event_id"])] == ["transaction_category"]
