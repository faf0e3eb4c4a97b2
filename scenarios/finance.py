"""Finance scenario: payments as a core ledger, a payment switch or a bank statement sees them.

Deterministic for a given seed so tests and benchmarks are repeatable; realistic enough that
counterparty names repeat (the model cache and fuzzy matching care about that).
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

COUNTERPARTIES = (
    "Northwind Traders", "Contoso Ltd", "Fabrikam Inc", "Adventure Works", "Tailspin Toys",
    "Wide World Importers", "Litware Inc", "Proseware Inc", "Lucerne Publishing",
    "Margie's Travel", "Alpine Ski House", "Coho Winery", "Blue Yonder Airlines",
)
MEMOS = (
    "invoice {n}", "salary {m}", "rent {m}", "utilities {m}", "refund order {n}",
    "consulting fees {m}", "insurance premium {m}", "office supplies {n}",
)
CURRENCIES = ("EUR", "EUR", "EUR", "USD", "GBP", "CHF")


def _iban(rng: random.Random) -> str:
    return f"DE{rng.randint(10, 99)}{rng.randint(10**17, 10**18 - 1)}"


def transaction_payloads(
    count: int, source: str, seed: int | None = None, now: datetime | None = None
) -> list[dict[str, Any]]:
    """``count`` attest.transaction.v1 payloads issued by ``source``, issued around ``now``."""
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    accounts = [_iban(rng) for _ in range(max(3, count // 20))]
    payloads = []
    for _ in range(count):
        n = rng.randint(10_000, 99_999)
        month = (now - timedelta(days=rng.randint(0, 90))).strftime("%B %Y")
        payloads.append({
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "source": source,
            "issued_at": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "reference": f"PAY-{rng.randint(10**9, 10**10 - 1)}",
            "amount": f"{rng.randint(1, 250_000) / 100:.2f}",
            "currency": rng.choice(CURRENCIES),
            "value_date": (now - timedelta(days=rng.randint(0, 3))).date().isoformat(),
            "account": rng.choice(accounts),
            "counterparty": rng.choice(COUNTERPARTIES),
            "memo": rng.choice(MEMOS).format(n=n, m=month),
            "direction": rng.choice(("debit", "credit")),
        })
    return payloads
