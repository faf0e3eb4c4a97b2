"""From a verified transaction payload to the matcher's ``Record``.

The account is replaced by its blind index here, at the edge: nothing downstream of this
function sees the account number.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date
from decimal import Decimal
from typing import Any

AccountIndex = Callable[[str], str]
"""Account number -> hex blind index (``protection.blind_index`` with the ``account`` key)."""


def signed_amount(payload: Mapping[str, Any]) -> Decimal:
    """Credit positive, debit negative; the amount field itself carries no sign convention."""
    amount = abs(Decimal(str(payload["amount"])))
    return amount if payload.get("direction") == "credit" else -amount


def record_from_payload(payload: Mapping[str, Any], account_index: AccountIndex):  # noqa: ANN201
    from reconcile.models import Record

    return Record(
        record_id=str(payload["event_id"]),
        source=str(payload["source"]),
        account_key=account_index(str(payload["account"])),
        reference=str(payload.get("reference", "")),
        amount=signed_amount(payload),
        currency=str(payload["currency"]),
        value_date=date.fromisoformat(str(payload["value_date"])),
        counterparty=str(payload.get("counterparty", "")),
        memo=str(payload.get("memo", "")),
    )
