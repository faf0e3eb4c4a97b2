"""The matcher's knobs, as one typed value (built from ``Settings`` by ``from_settings``)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any


@dataclass(frozen=True, slots=True)
class MatchConfig:
    """Tolerances and thresholds of the cascade.

    ``amount_abs`` / ``amount_rel``: two amounts agree when they differ by at most the larger
    of the two (rounding, FX conversion). ``date_days``: value dates agree within this many
    calendar days (weekends, holidays). ``window_days``: a record waits this long past its
    value date for a partner before it becomes a break. Scores at or above ``accept`` match;
    at or above ``suggest`` they are suggested to an analyst; below, nothing is proposed.
    ``max_group``: the largest group subset-sum tries on one side (the search is bounded).
    """

    amount_abs: Decimal = Decimal("0.05")
    amount_rel: Decimal = Decimal("0.005")
    date_days: int = 4
    window_days: int = 10
    accept: float = 0.80
    suggest: float = 0.55
    max_group: int = 4
    max_candidates: int = 12

    def tolerance(self, amount: Decimal) -> Decimal:
        return max(self.amount_abs, abs(amount) * self.amount_rel)

    def amounts_agree(self, a: Decimal, b: Decimal) -> bool:
        return abs(a - b) <= self.tolerance(max(abs(a), abs(b)))

    @classmethod
    def from_settings(cls, settings: Any) -> MatchConfig:
        return cls(
            amount_abs=Decimal(str(settings.recon_amount_tolerance)),
            amount_rel=Decimal(str(settings.recon_amount_tolerance_pct)) / 100,
            date_days=settings.recon_date_window_days,
            window_days=settings.recon_window_days,
            accept=settings.recon_accept_score,
            suggest=settings.recon_suggest_score,
            max_group=settings.recon_max_group,
        )
