"""Issue 14, item 6: a field's associated data binds its row's schema and department.

Since key binding the writer seals fields as format 2, whose associated data adds the row's
``typ`` and ``department`` to format 1's table, column and row id: a row moved to another
department (its ``department`` column changed, which decides whose view it is in) no longer
opens. Format 1 ciphertexts stored before still open as they always did.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from access.policy import AccessDecision, AccessReason
from protection import envelope
from protection.envelope import DataKey, FieldContext, field_key_ref, field_scope, open_field, seal_field
from protection.errors import FieldIntegrityError
from protection.fields import FieldProtector
from protection.keyring import StaticKeyring
from protection.reader import FieldReader, KeyRecords
from protection.tiers import Tier, protection_catalog
from scenarios.finance import transaction_payloads
from schemas.catalog import DOCUMENT_V1, TRANSACTION_V1
from storage.db import engine_for
from storage.events import store_events
from storage.protected import RowFilter, read_protected
from tests.support.events import stored_events

CATALOG = protection_catalog()
ROW = "3f1c2a8e-0000-4000-8000-000000000001"
LEDGER = field_scope(TRANSACTION_V1, "core-ledger")


def test_a_scoped_field_opens_only_in_its_schema_and_department() -> None:
    key = DataKey.generate(Tier.CONFIDENTIAL)
    here = FieldContext("transaction_fields", "amount", ROW, LEDGER)
    sealed = seal_field(key, b'"1250.00"', here)
    assert sealed[0] == envelope.FORMAT_V2
    assert open_field(key, sealed, here) == b'"1250.00"'
    for elsewhere in (field_scope(TRANSACTION_V1, "tax-bureau"),
                      field_scope(DOCUMENT_V1, "core-ledger"), None):
        with pytest.raises(FieldIntegrityError):
            open_field(key, sealed, FieldContext(here.table, here.column, ROW, elsewhere))


def test_fields_sealed_before_the_binding_still_open() -> None:
    """Format 1 (rows stored before this release): no scope in its associated data."""
    key = DataKey.generate(Tier.RESTRICTED)
    old = seal_field(key, b'"DE89"', FieldContext("transaction_fields", "account", ROW))
    assert old[0] == envelope.FORMAT_V1
    assert open_field(key, old, FieldContext("transaction_fields", "account", ROW)) == b'"DE89"'
    assert open_field(key, old, FieldContext("transaction_fields", "account", ROW, LEDGER)) == b'"DE89"'
    assert field_key_ref(old).key_id == field_key_ref(
        seal_field(key, b"1", FieldContext("t", "c", ROW, LEDGER))).key_id


def test_a_scoped_field_cannot_be_passed_off_as_format_1() -> None:
    """Rewriting the format byte changes the header, which is in the associated data."""
    key = DataKey.generate(Tier.CONFIDENTIAL)
    here = FieldContext("transaction_fields", "amount", ROW, LEDGER)
    sealed = bytearray(seal_field(key, b'"1"', here))
    sealed[0] = envelope.FORMAT_V1
    for context in (here, FieldContext(here.table, here.column, ROW)):
        with pytest.raises(FieldIntegrityError):
            open_field(key, bytes(sealed), context)


def _allow(typ: str, names: list[str]) -> dict[str, AccessDecision]:
    return {n: AccessDecision(CATALOG.field(typ, n), "test", True, AccessReason.GRANTED, 1)
            for n in names}


def test_the_writer_binds_each_row_to_its_department(keyring: StaticKeyring) -> None:
    payload = transaction_payloads(1, "core-ledger", seed=21)[0]
    batch = FieldProtector(keyring.restricted_to(())).seal_batch(
        stored_events([payload], TRANSACTION_V1))
    sealed = batch.events[0]
    assert sealed.department == "core-ledger"
    assert all(c[0] == envelope.FORMAT_V2 for c in sealed.columns.values())
    keys = KeyRecords({r.key_id: r for r in batch.data_keys},
                      {r.key_id: r for r in batch.wrapping_keys})
    allowed, fields = _allow(TRANSACTION_V1, ["amount"]), {"amount": sealed.columns["amount"]}
    reader = FieldReader(keyring)
    assert reader.open_fields(TRANSACTION_V1, sealed.event_id, fields, allowed, keys,
                              department="core-ledger")["amount"].value == payload["amount"]
    with pytest.raises(FieldIntegrityError, match="another department"):
        reader.open_fields(TRANSACTION_V1, sealed.event_id, fields, allowed, keys,
                           department="payment-switch")
    with pytest.raises(FieldIntegrityError, match="department"):
        reader.open_fields(TRANSACTION_V1, sealed.event_id, fields, allowed, keys)


@pytest.mark.integration
def test_a_row_moved_to_another_department_in_postgres_fails_to_open(
    database_url: str, keyring: StaticKeyring, protector: FieldProtector
) -> None:
    payload = transaction_payloads(1, "core-ledger", seed=uuid.uuid4().int)[0]
    store_events(database_url, stored_events([payload], TRANSACTION_V1), protector=protector)
    schema = CATALOG.schema(TRANSACTION_V1)
    columns = ["amount", "counterparty", "account"]

    def read() -> dict[str, object]:
        rows, keys = read_protected(database_url, db_role="attest_financial_crime", schema=schema,
                                    columns=columns, where=RowFilter(event_id=payload["event_id"]),
                                    key_ids_of=FieldReader.key_ids)
        (row,) = rows
        opened = FieldReader(keyring).open_fields(TRANSACTION_V1, row.event_id, row.ciphertexts,
                                                  _allow(TRANSACTION_V1, columns), keys,
                                                  department=row.department)
        return {n: r.value for n, r in opened.items()}

    assert read()["amount"] == payload["amount"]
    with engine_for(database_url).begin() as conn:
        conn.execute(text("UPDATE transaction_fields SET department = 'payment-switch' "
                          "WHERE event_id = CAST(:e AS uuid)"), {"e": payload["event_id"]})
    with pytest.raises(FieldIntegrityError, match="another department"):
        read()
