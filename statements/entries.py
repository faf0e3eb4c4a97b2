"""One statement entry, whatever the file format, and its signed-event payload.

Both parsers produce ``Entry`` values; ``entry_payload`` turns one into an
``attest.transaction.v1`` payload from ``bank-statement``. The event id is derived from what
identifies the entry in the bank's statement (account, statement id, entry position, value
date, amount), so importing the same file twice yields the same ids and intake stores each
entry once.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cache
from typing import Any

SOURCE = "bank-statement"
_NAMESPACE = uuid.UUID("0f3b3c55-6d0e-4f5e-9a3e-8f1c2b7a4d10")
NO_REFERENCE = "NONREF"


@dataclass(frozen=True, slots=True)
class Entry:
    """One booked line of a statement, in the bank's account's perspective.

    ``amount`` is positive; ``direction`` says credit or debit (a reversal already flipped).
    ``line`` is where the entry starts in the file (for error messages and provenance).
    """

    account: str
    statement_id: str
    index: int
    amount: Decimal
    currency: str
    direction: str
    value_date: date
    entry_date: date | None
    reference: str
    counterparty: str
    memo: str
    line: int


def entry_event_id(entry: Entry) -> str:
    name = json.dumps([entry.account, entry.statement_id, entry.index, entry.value_date.isoformat(),
                       str(entry.amount), entry.direction, entry.currency])
    return str(uuid.uuid5(_NAMESPACE, name))


@cache
def _schema_fields() -> frozenset[str]:
    from schemas.catalog import TRANSACTION_V1, schema_document

    return frozenset(schema_document(TRANSACTION_V1)["properties"])


def entry_payload(entry: Entry, now: datetime | None = None) -> dict[str, Any]:
    """The transaction payload of one entry (fields trimmed to the schema's limits)."""
    payload: dict[str, Any] = {
        "event_id": entry_event_id(entry),
        "source": SOURCE,
        "issued_at": (now or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "reference": (entry.reference or NO_REFERENCE)[:64],
        "amount": f"{entry.amount:.2f}" if entry.amount == entry.amount.quantize(Decimal("0.01"))
        else str(entry.amount),
        "currency": entry.currency,
        "value_date": entry.value_date.isoformat(),
        "account": entry.account[:64],
        "counterparty": entry.counterparty[:256],
        "memo": entry.memo[:1024],
        "direction": entry.direction,
    }
    # The entry (booking) date travels once the transaction schema has a field for it.
    if entry.entry_date is not None and "entry_date" in _schema_fields():
        payload["entry_date"] = entry.entry_date.isoformat()
    return payload
