"""Small builders of matcher records for the cascade's unit tests."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from itertools import count

from reconcile.models import Record

_ids = count(1)


def rec(source: str, reference: str, amount: str, day: str = "2026-03-02", *, account: str = "A1",
        currency: str = "EUR", counterparty: str = "Acme GmbH", memo: str = "invoice 1",
        record_id: str | None = None) -> Record:
    return Record(
        record_id=record_id or f"{source[:1]}{next(_ids)}", source=source, account_key=account,
        reference=reference, amount=Decimal(amount), currency=currency,
        value_date=date.fromisoformat(day), counterparty=counterparty, memo=memo,
    )


def ledger(*args: object, **kwargs: object) -> Record:
    return rec("core-ledger", *args, **kwargs)  # type: ignore[arg-type]


def statement(*args: object, **kwargs: object) -> Record:
    return rec("bank-statement", *args, **kwargs)  # type: ignore[arg-type]
