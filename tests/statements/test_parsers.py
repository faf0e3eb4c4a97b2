"""MT940 and camt.053 files of several banks' styles, parsed to entries and payloads."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from schemas.catalog import TRANSACTION_V1, validation_errors
from statements.camt053 import parse_camt053
from statements.entries import entry_payload
from statements.errors import StatementError
from statements.importer import StatementFormat, statement_payloads
from statements.mt940_file import parse_mt940

DATA = Path(__file__).parent / "data"
NOW = datetime(2026, 12, 1, 9, tzinfo=UTC)


def mt940(name: str):
    return parse_mt940((DATA / name).read_bytes())


def camt(name: str):
    return parse_camt053((DATA / name).read_bytes())


def test_structured_86_german_subfields_and_reversal_of_credit():
    rent, invoice, returned = mt940("commerzbank_structured.sta")
    assert (rent.account, rent.amount, rent.direction, rent.currency) == (
        "37040044/0532013000", Decimal("250.00"), "debit", "EUR")
    assert rent.reference == "RF1234567890123" and rent.counterparty == "ACME GMBH"
    assert rent.memo == "RENT NOVEMBER 2026 APARTMENT 4B"  # ?21 and ?22 joined across lines
    assert invoice.direction == "credit" and invoice.reference == "9912345679"  # NONREF, NOTPROVIDED
    assert returned.direction == "debit"  # RC: a reversed credit takes money out
    assert (rent.line, invoice.line, returned.line) == (5, 8, 10)


def test_slash_keyed_86_in_swift_blocks_with_field_broken_over_lines():
    chairs, refund = mt940("abnamro_slash.sta")
    assert chairs.counterparty == "Northwind Traders Ltd" and chairs.reference == "RF9876543210"
    assert chairs.memo == "INVOICE 2026-0042 OFFICE CHAIRS" and chairs.direction == "debit"
    assert refund.reference == "NONREF" and refund.memo == "REFUND ORDER 77123"
    assert refund.direction == "credit" and refund.amount == Decimal("2000.00")


def test_free_text_86_multiline_and_two_statements_in_one_file():
    card, fees, interest = mt940("freetext_multi.sta")
    assert card.memo == "CARD PAYMENT TO Coho Winery SL ON 30 NOV 2026" and card.counterparty == ""
    assert fees.reference == "PAY-77/88" and fees.currency == "GBP"
    assert card.statement_id != interest.statement_id and interest.index == 0
    assert interest.value_date == date(2026, 12, 2)


def test_camt053_v02_single_transactions_and_structured_reference():
    rent, invoice = camt("bank_a_camt053_v02.xml")
    assert (rent.value_date, rent.entry_date) == (date(2026, 11, 30), date(2026, 11, 27))
    assert rent.counterparty == "Acme G.m.b.H." and rent.direction == "debit"
    assert invoice.reference == "RF18539007547034"  # EndToEndId NOTPROVIDED: creditor reference
    assert invoice.counterparty == "Contoso AG" and invoice.direction == "credit"


def test_camt053_v08_batch_line_lists_references_and_reversal_flips_the_mark():
    batch, reversal = camt("bank_b_camt053_v08_batch.xml")
    assert batch.account == "0532013000" and batch.currency == "CHF"
    assert batch.reference == "BATCH7781234"
    assert "RF1000000000000001" in batch.memo and "RF1000000000000002" in batch.memo
    assert batch.value_date == date(2026, 11, 30)  # DtTm
    assert reversal.direction == "debit" and reversal.counterparty == "Proseware SpA"


@pytest.mark.parametrize(("kind", "name", "line", "words"), [
    (StatementFormat.mt940, "broken_amount.sta", 7, ":61:"),
    (StatementFormat.mt940, "not_a_statement.sta", 1, "not an MT940"),
    (StatementFormat.camt053, "broken_not_wellformed.xml", 8, "well-formed"),
    (StatementFormat.camt053, "broken_no_mark.xml", 8, "credit/debit"),
])
def test_malformed_files_name_the_line(kind, name, line, words):
    with pytest.raises(StatementError) as caught:
        statement_payloads(kind, DATA / name, NOW)
    assert caught.value.line == line and words in str(caught.value)
    assert str(caught.value).startswith(f"line {line}: ")


@pytest.mark.parametrize(("kind", "name"), [
    (StatementFormat.mt940, "commerzbank_structured.sta"), (StatementFormat.mt940, "abnamro_slash.sta"),
    (StatementFormat.mt940, "freetext_multi.sta"), (StatementFormat.camt053, "bank_a_camt053_v02.xml"),
    (StatementFormat.camt053, "bank_b_camt053_v08_batch.xml"),
])
def test_payloads_fit_the_schema_and_ids_are_stable(kind, name):
    first = statement_payloads(kind, DATA / name, NOW)
    again = statement_payloads(kind, DATA / name, datetime(2026, 12, 2, tzinfo=UTC))
    assert [p["event_id"] for p in first] == [p["event_id"] for p in again]
    assert len({p["event_id"] for p in first}) == len(first)
    for payload in first:
        assert validation_errors(TRANSACTION_V1, payload) == []
        assert payload["source"] == "bank-statement"


def test_a_changed_entry_gets_another_id():
    entry = mt940("commerzbank_structured.sta")[0]
    other = dataclasses.replace(entry, amount=Decimal("250.01"))
    assert entry_payload(entry, NOW)["event_id"] != entry_payload(other, NOW)["event_id"]
