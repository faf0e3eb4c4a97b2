"""The values the matcher works on: one record per source's view of a payment, and results.

A ``Record`` holds what matching needs and nothing more. The account appears only as its
blind index (hex), so records from different sources join on the index, never on the
account number itself.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Any


class Stage(StrEnum):
    """Which step of the cascade produced a match (cheapest and surest first)."""

    EXACT = "exact"
    TOLERANCE = "tolerance"
    FUZZY = "fuzzy"
    REVERSAL = "reversal"


class Status(StrEnum):
    """A match is ``matched`` when the cascade is sure, ``suggested`` when an analyst decides."""

    MATCHED = "matched"
    SUGGESTED = "suggested"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"


class BreakReason(StrEnum):
    MISSING = "missing"
    AMOUNT_DIFFERS = "amount_differs"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class Record:
    """One source's view of one payment, as the matcher sees it.

    ``amount`` is signed (credit positive, debit negative), so a reversal sums to zero with
    the payment it reverses.
    """

    record_id: str
    source: str
    account_key: str
    reference: str
    amount: Decimal
    currency: str
    value_date: date
    counterparty: str = ""
    memo: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "record_id": self.record_id, "source": self.source, "account_key": self.account_key,
            "reference": self.reference, "amount": str(self.amount), "currency": self.currency,
            "value_date": self.value_date.isoformat(), "counterparty": self.counterparty,
            "memo": self.memo,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        return cls(
            record_id=data["record_id"], source=data["source"], account_key=data["account_key"],
            reference=data["reference"], amount=Decimal(data["amount"]), currency=data["currency"],
            value_date=date.fromisoformat(data["value_date"]),
            counterparty=data.get("counterparty", ""), memo=data.get("memo", ""),
        )


@dataclass(frozen=True, slots=True)
class Match:
    """Records of the left source and of the right source that are the same money.

    ``rule`` names what fired (e.g. ``reference+amount``, ``subset-sum``); ``score`` is in
    [0, 1]; ``difference`` is right total minus left total.
    """

    pairing: str
    stage: Stage
    rule: str
    score: float
    status: Status
    left_ids: tuple[str, ...]
    right_ids: tuple[str, ...]
    difference: Decimal = Decimal(0)
    currency: str = ""

    @property
    def kind(self) -> str:
        """``1:1``, ``1:N``, ``N:1`` or ``N:M``."""
        left = "1" if len(self.left_ids) == 1 else "N"
        right = "1" if len(self.right_ids) == 1 else ("N" if left == "1" else "M")
        return f"{left}:{right}"

    match_id: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        # Canonical order: which record of a group arrived first depends on how partitions
        # were read (and on where a killed worker resumed); the stored row must not.
        object.__setattr__(self, "left_ids", tuple(sorted(self.left_ids)))
        object.__setattr__(self, "right_ids", tuple(sorted(self.right_ids)))
        if not self.match_id:  # derived once from the pairing and the records it joins
            name = "|".join([self.pairing, *self.left_ids, "/", *self.right_ids])
            object.__setattr__(self, "match_id",
                               str(uuid.uuid5(uuid.NAMESPACE_URL, "attest.recon.match:" + name)))


@dataclass(frozen=True, slots=True)
class Break:
    """A record still unmatched when its window closed, and why."""

    pairing: str
    record_id: str
    source: str
    reason: BreakReason
    detail: str
    amount: Decimal = Decimal(0)
    currency: str = ""
    related_ids: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "related_ids", tuple(sorted(self.related_ids)))  # as Match's ids

    @property
    def break_id(self) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"attest.recon.break:{self.pairing}|{self.record_id}"))
