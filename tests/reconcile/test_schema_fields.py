"""Issue 12 (c): the fields the reconciliation reads are in the schemas, with one tier each,
and travel: a statement line's ``entry_date`` and a contribution record's
``contribution_base`` pass validation, are stored sealed, and the fourth government rule
fires on what intake accepted."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from agents.intake import IntakeProcessor
from agents.messages import IncomingMessage
from agents.reconciliation import ConsistencyStage
from protection.fields import FieldProtector
from protection.keyring import generate_keyring
from protection.tiers import protection_catalog
from reconcile.government import SOCIAL_SECURITY, TAX_BUREAU, readable_from_policy
from schemas.catalog import DOCUMENT_V1, TRANSACTION_V1, validation_errors
from security.keyfiles import generate_key
from security.registry import KeyRecord
from statements.entries import Entry, entry_payload
from streams.producer import sign_payload
from tests.support.databases import scratch_database


def _statement_payload() -> dict:
    entry = Entry(account="DE89370400440532013000", statement_id="S1", index=1, amount=Decimal("12.50"),
                  currency="EUR", direction="credit", value_date=date(2026, 11, 30),
                  entry_date=date(2026, 11, 27), reference="INV-1", counterparty="ACME",
                  memo="invoice INV-1", line=1)
    return entry_payload(entry, datetime.now(UTC))


def test_the_rules_fields_are_in_the_schemas_and_have_one_tier_each():
    catalog = protection_catalog()
    assert catalog.field(TRANSACTION_V1, "entry_date").tier.label == "internal"
    assert catalog.field(DOCUMENT_V1, "contribution_base").tier.label == "restricted"
    payload = _statement_payload()
    assert payload["entry_date"] == "2026-11-27"  # the importer sends it now
    assert validation_errors(TRANSACTION_V1, payload) == []
    assert validation_errors(TRANSACTION_V1, {**payload, "entry_date": "27.11.2026"})
    doc = {"event_id": str(uuid.uuid4()), "source": SOCIAL_SECURITY, "issued_at": "2026-11-30T12:00:00Z",
           "document_id": "c-1", "agency": SOCIAL_SECURITY, "subject_id": "1234-5678-9012", "title": "t",
           "body": "b", "insurance_status": "insured", "contribution_base": "20000.00"}
    assert validation_errors(DOCUMENT_V1, doc) == []
    assert validation_errors(DOCUMENT_V1, {**doc, "contribution_base": "-1"})
    del doc["contribution_base"]
    assert validation_errors(DOCUMENT_V1, doc) == []  # optional: existing producers keep working


@pytest.mark.integration
async def test_intake_stores_both_and_the_contribution_base_rule_fires(stack_settings, database_url):
    now = datetime.now(UTC)
    stamp = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    nid = "1234-5678-9012"
    docs = [
        {"event_id": str(uuid.uuid4()), "source": TAX_BUREAU, "issued_at": stamp, "document_id": "r-1",
         "agency": TAX_BUREAU, "subject_id": nid, "title": "return", "body": "b", "income": "50000.00",
         "tax_paid": "9000.00"},
        {"event_id": str(uuid.uuid4()), "source": SOCIAL_SECURITY, "issued_at": stamp, "document_id": "c-1",
         "agency": SOCIAL_SECURITY, "subject_id": nid, "title": "contributions", "body": "b",
         "insurance_status": "insured", "contribution_base": "20000.00"},
    ]
    statement = {**_statement_payload(), "issued_at": stamp}
    keys = {s: generate_key(s) for s in (TAX_BUREAU, SOCIAL_SECURITY, statement["source"])}
    snapshot = {k.kid: KeyRecord(kid=k.kid, source=k.source, alg=k.alg, public_jwk=k.public_jwk)
                for k in keys.values()}
    keyring = generate_keyring(protection_catalog().domains)
    batch = [IncomingMessage("doc", 0, i, None, sign_payload(keys[p["source"]], p, DOCUMENT_V1), now)
             for i, p in enumerate(docs)]
    signed = sign_payload(keys[statement["source"]], statement, TRANSACTION_V1)
    tx = [IncomingMessage("tx", 0, 0, None, signed, now)]
    with scratch_database(database_url, "fields") as url:
        settings = stack_settings.model_copy(update={"database_url": url})
        types = {"tx": frozenset({TRANSACTION_V1}), "doc": frozenset({DOCUMENT_V1})}
        intake = IntakeProcessor(settings, "w", types, protector=FieldProtector(keyring.restricted_to(())))
        intake.replace_keys(snapshot)
        stored_docs, stored_tx = await intake.process(batch), await intake.process(tx)
        assert not stored_docs.dead_letters and not stored_tx.dead_letters
        from sqlalchemy import text

        from storage.db import engine_for

        with engine_for(url).connect() as conn:
            base = conn.execute(text("SELECT contribution_base FROM document_fields WHERE event_id = :e"),
                                {"e": docs[1]["event_id"]}).scalar_one()
            entry = conn.execute(text("SELECT entry_date FROM transaction_fields WHERE event_id = :e"),
                                 {"e": statement["event_id"]}).scalar_one()
        assert base is not None and b"20000" not in bytes(base)  # stored, sealed
        assert entry is not None and b"2026-11-27" not in bytes(entry)
        stage = ConsistencyStage(settings, "w", keyring.blind_index_key("national_id"),
                                 readable_from_policy("government"))
        out = await stage.process(stored_docs.accepted)
        assert [d.rule for d in out.discrepancies] == ["income_differs_from_contribution_base"]
        assert out.discrepancies[0].visible_to == (TAX_BUREAU,)
