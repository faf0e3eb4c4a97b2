"""Someone with write access to the database moves or alters ciphertexts: every read fails loudly."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from access.policy import AccessDecision, AccessReason
from protection.errors import FieldIntegrityError
from protection.fields import FieldProtector
from protection.keyring import StaticKeyring
from protection.reader import FieldReader
from protection.tiers import protection_catalog
from scenarios.finance import transaction_payloads
from schemas.catalog import TRANSACTION_V1
from storage.db import engine_for
from storage.events import store_events
from storage.protected import RowFilter, read_protected
from tests.support.events import stored_events

pytestmark = pytest.mark.integration
CATALOG = protection_catalog()
SCHEMA = CATALOG.schema(TRANSACTION_V1)
COLUMNS = ["reference", "value_date", "direction", "amount", "counterparty", "memo", "account"]
ALLOWED = {n: AccessDecision(SCHEMA.field(n), "test", True, AccessReason.GRANTED, 1) for n in COLUMNS}


def _open(url: str, keyring: StaticKeyring, event_id: str) -> dict[str, object]:
    rows, keys = read_protected(url, db_role="attest_financial_crime", schema=SCHEMA,
                                columns=COLUMNS, where=RowFilter(event_id=event_id),
                                key_ids_of=FieldReader.key_ids)
    (row,) = rows
    opened = FieldReader(keyring).open_fields(TRANSACTION_V1, row.event_id, row.ciphertexts,
                                              ALLOWED, keys, department=row.department)
    return {n: r.value for n, r in opened.items()}


@pytest.fixture()
def pair(database_url: str, protector: FieldProtector) -> tuple[dict, dict]:
    """Two stored transactions of one account: they share data keys, so only the AAD differs."""
    first, second = transaction_payloads(2, "core-ledger", seed=uuid.uuid4().int)
    second["account"] = first["account"]
    store_events(database_url, stored_events([first, second], TRANSACTION_V1), protector=protector)
    return first, second


def _sql(url: str, statement: str, **params: object) -> None:
    with engine_for(url).begin() as conn:
        conn.execute(text(statement), params)


# Each statement gets :a (the first row's event_id) and :b (the row that is tampered with).
CASES = {
    "moved to another row":
        "UPDATE transaction_fields SET amount = (SELECT amount FROM transaction_fields "
        "WHERE event_id = CAST(:a AS uuid)) WHERE event_id = CAST(:b AS uuid)",
    "moved to another column":
        "UPDATE transaction_fields SET counterparty = memo WHERE event_id = CAST(:b AS uuid) "
        "AND :a <> ''",
    "one bit flipped":
        "UPDATE transaction_fields SET amount = set_byte(amount, 40, get_byte(amount, 40) # 1) "
        "WHERE event_id = CAST(:b AS uuid) AND :a <> ''",
    "its data key swapped for another subject's":  # the key named by the account ciphertext
        "UPDATE data_keys SET subject_ref = decode(repeat('00', 32), 'hex') WHERE id = ("
        "SELECT CAST(encode(substring(account from 3 for 16), 'hex') AS uuid) "
        "FROM transaction_fields WHERE event_id = CAST(:b AS uuid)) AND :a <> ''",
}


@pytest.mark.parametrize("case", CASES)
def test_tampering_makes_the_read_fail_loudly(
    case: str, database_url: str, keyring: StaticKeyring, pair: tuple[dict, dict]
) -> None:
    first, second = pair
    before = _open(database_url, keyring, second["event_id"])
    assert before["amount"] == second["amount"] and before["account"] == second["account"]
    _sql(database_url, CASES[case], a=first["event_id"], b=second["event_id"])
    with pytest.raises(FieldIntegrityError, match="authentication"):
        _open(database_url, keyring, second["event_id"])
    if "data key" in case:
        # Both rows share that data key (one account, one tier): both are unreadable now.
        with pytest.raises(FieldIntegrityError):
            _open(database_url, keyring, first["event_id"])
    else:
        assert _open(database_url, keyring, first["event_id"])["amount"] == first["amount"]
