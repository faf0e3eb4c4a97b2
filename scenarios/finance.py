"""Finance scenario: payments as a core ledger, a payment switch or a bank statement sees them.

Deterministic for a given seed so tests and benchmarks are repeatable; realistic enough that
counterparty names repeat (the model cache and fuzzy matching care about that).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
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


# -- the reconciliation scenario: one payment, three sources, known truth ----------------------
#
# ``finance_scenario`` produces what ``core-ledger``, ``payment-switch`` and ``bank-statement``
# each report about the same payments, with the mess real feeds have, plus the ground truth:
# which records belong together and which must end as breaks (and why). docs/reconciliation.md
# describes each kind of mess and how the matcher is meant to handle it.

LEDGER, SWITCH, STATEMENT = "core-ledger", "payment-switch", "bank-statement"
PAIRINGS = ((LEDGER, SWITCH), (LEDGER, STATEMENT))
COMPANIES = (
    ("Acme GmbH", ("ACME GMBH", "Acme G.m.b.H.", "ACME")),
    ("Northwind Traders Ltd", ("NORTHWIND TRADERS LIMITED", "Northwind Traders", "NORTHWIND TRAD")),
    ("Contoso AG", ("CONTOSO AG", "Contoso", "CONTOSO A.G.")),
    ("Fabrikam Inc", ("FABRIKAM INC.", "Fabrikam Incorporated", "FABRIKAM")),
    ("Tailspin Toys SARL", ("TAILSPIN TOYS S.A.R.L.", "Tailspin Toys", "TAILSPIN")),
    ("Wide World Importers BV", ("WIDE WORLD IMPORTERS B.V.", "Wide World Imp.", "WWI BV")),
    ("Litware Oy", ("LITWARE OY", "Litware", "LITWARE O.Y.")),
    ("Proseware SpA", ("PROSEWARE S.P.A.", "Proseware", "PROSEWARE SPA")),
    ("Lucerne Publishing AG", ("LUCERNE PUBLISHING", "Lucerne Publ. AG", "LUCERNE PUB")),
    ("Alpine Ski House KG", ("ALPINE SKI HOUSE K.G.", "Alpine Ski House", "ALPINE SKI")),
    ("Coho Winery SL", ("COHO WINERY S.L.", "Coho Winery", "COHO")),
    ("Blue Yonder Airlines SA", ("BLUE YONDER AIRLINES S.A.", "Blue Yonder", "BLUE YONDER AIR")),
    ("Margie's Travel LLC", ("MARGIES TRAVEL LLC", "Margie's Travel", "MARGIE S TRAVEL")),
    ("Trey Research AB", ("TREY RESEARCH A.B.", "Trey Research", "TREY RES")),
    ("Woodgrove Bank NV", ("WOODGROVE BANK N.V.", "Woodgrove", "WOODGROVE BK")),
    ("Humongous Insurance plc", ("HUMONGOUS INSURANCE PLC", "Humongous Ins.", "HUMONGOUS")),
)
ROUND_AMOUNTS = ("50.00", "100.00", "120.00", "250.00", "500.00", "1000.00", "1500.00", "2500.00")
HOLIDAYS = ((1, 1), (5, 1), (10, 3), (12, 25), (12, 26))


#: Payment purposes that recur monthly, and how a bank's remittance text may reword them.
PURPOSES = ("rent", "utilities", "salary", "consulting fees", "insurance premium")
REWORDED = {
    "rent": "MONTHLY LEASE", "utilities": "ELECTRICITY AND WATER", "salary": "PAYROLL",
    "consulting fees": "ADVISORY SERVICES", "insurance premium": "POLICY CONTRIBUTION",
    "invoice": "BILL", "refund order": "REIMBURSEMENT", "office supplies": "STATIONERY",
}


def reworded(memo: str) -> str:
    """A statement's rewording of a remittance text: the purpose in other words, upper case."""
    for purpose, words in REWORDED.items():
        if memo.startswith(purpose):
            return (words + memo[len(purpose):]).upper()
    return memo.upper()


def next_business_day(day: date) -> date:
    """The first day on or after ``day`` that is neither a weekend nor a fixed holiday."""
    while day.weekday() >= 5 or (day.month, day.day) in HOLIDAYS:
        day += timedelta(days=1)
    return day


def _typo(text: str, rng: random.Random) -> str:
    """One character replaced or two neighbours swapped, away from the ends."""
    if len(text) < 6:
        return text
    i = rng.randint(2, len(text) - 3)
    if rng.random() < 0.5:
        return text[:i] + text[i + 1] + text[i] + text[i + 2:]
    return text[:i] + rng.choice("0123456789") + text[i + 1:]


@dataclass
class FinanceScenario:
    """Payloads in the order a run sends them, and the truth to score matching against.

    ``truth`` is JSON-ready: per pairing (``"core-ledger~payment-switch"``), the ``links``
    (left id, right id) that belong together and the ``breaks`` (record id, reason) a
    perfect matcher ends with.
    """

    payloads: list[dict[str, Any]]
    truth: dict[str, Any]


def pairing_name(left: str, right: str) -> str:
    return f"{left}~{right}"


def finance_scenario(  # noqa: C901 - one generator, one place for every kind of mess
    count: int, seed: int | None = None, mess: float = 0.2, now: datetime | None = None,
    days: int = 60,
) -> FinanceScenario:
    """``count`` payments seen by ledger, switch and statement, ``mess`` in [0, 1] of them messy.

    Value dates spread over ``days`` before ``now``; every ``issued_at`` is ``now`` (the
    intake skew window needs it). Send order follows value date, with late records moved on.
    """
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    stamp = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    accounts = [_iban(rng) for _ in range(max(3, count // 150))]
    links: dict[str, list[list[str]]] = {pairing_name(*p): [] for p in PAIRINGS}
    breaks: dict[str, list[dict[str, str]]] = {pairing_name(*p): [] for p in PAIRINGS}
    kinds: dict[str, int] = {}
    out: list[tuple[float, dict[str, Any]]] = []
    used_refs: set[str] = set()

    def new_id() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    def new_ref() -> str:
        while True:
            ref = f"RF{rng.randint(10**15, 10**16 - 1)}"
            if ref not in used_refs:
                used_refs.add(ref)
                return ref

    def emit(order: float, source: str, **fields: Any) -> str:
        event_id = new_id()
        payload = {"event_id": event_id, "source": source, "issued_at": stamp, **fields}
        payload["amount"] = f"{Decimal(payload['amount']):.2f}"
        out.append((order, payload))
        return event_id

    def note(kind: str) -> None:
        kinds[kind] = kinds.get(kind, 0) + 1

    p = mess
    made = 0
    twin: tuple[Any, ...] | None = None
    while made < count:
        account = rng.choice(accounts)
        currency = rng.choice(CURRENCIES)
        name, variants = rng.choice(COMPANIES)
        booked = (now - timedelta(days=rng.randint(1, days))).date()
        direction = rng.choice(("debit", "credit"))
        amount = (Decimal(rng.choice(ROUND_AMOUNTS)) if rng.random() < 0.4
                  else Decimal(rng.randint(100, 500_000)) / 100)
        # A twin: same account, day and amount as the payment before, and neither reference
        # on the statement, whose remittance text is reworded ("rent" as "MONTHLY LEASE").
        # Half the twins pay another counterparty; the other half pay the same one for
        # something else (rent and utilities), so only the meaning of the texts tells them
        # apart: where string distance runs out and the model's similarity earns its place.
        month = booked.strftime("%B %Y")
        memo = rng.choice(MEMOS).format(n=rng.randint(10_000, 99_999), m=month)
        is_twin = twin is not None
        if twin is not None:
            account, currency, booked, direction, amount, other, same, purpose = twin
            month = booked.strftime("%B %Y")
            if same:
                name, variants = next(c for c in COMPANIES if c[0] == other)
                memo = f"{rng.choice([k for k in PURPOSES if k != purpose])} {month}"
            else:
                while name == other:
                    name, variants = rng.choice(COMPANIES)
            twin = None
        elif rng.random() < p * 0.1:
            amount = Decimal(rng.choice(ROUND_AMOUNTS))
            same = rng.random() < 0.5
            purpose = rng.choice(PURPOSES)
            if same:
                memo = f"{purpose} {month}"
            twin = (account, currency, booked, direction, amount, name, same, purpose)
            is_twin = True
        order = booked.toordinal() + rng.random()
        ref = new_ref()
        base = {"account": account, "currency": currency, "direction": direction}
        roll = rng.random()
        late = rng.random() < p * 0.1

        if is_twin:
            roll = 1.0  # a plain payment, seen once by each source
        if roll < p * 0.03:  # a payment and its reversal, both on the ledger only
            note("reversal")
            a = emit(order, LEDGER, reference=ref, amount=amount, value_date=booked.isoformat(),
                     counterparty=name, memo=memo, **base)
            rev = {**base, "direction": "credit" if direction == "debit" else "debit"}
            b = emit(order + 1, LEDGER, reference=f"REV {ref}", amount=amount,
                     value_date=(booked + timedelta(days=1)).isoformat(), counterparty=name,
                     memo=f"reversal of {ref}", **rev)
            for key in links:
                links[key].append([a, b])
            made += 1
            continue

        if roll < p * 0.13:  # a batch: several invoices, one statement line
            note("batch")
            k = rng.randint(2, 4)
            parts = [Decimal(rng.randint(100, 200_000)) / 100 for _ in range(k)]
            refs = [new_ref() for _ in range(k)]
            ledger_ids = []
            for part, r in zip(parts, refs, strict=True):
                m = f"invoice {rng.randint(10_000, 99_999)}"
                lid = emit(order, LEDGER, reference=r, amount=part, value_date=booked.isoformat(),
                           counterparty=name, memo=m, **base)
                sid = emit(order + 0.1, SWITCH, reference=r, amount=part,
                           value_date=booked.isoformat(), counterparty=variants[0], memo=m, **base)
                links[pairing_name(LEDGER, SWITCH)].append([lid, sid])
                ledger_ids.append(lid)
            listed = rng.random() < 0.7
            st = emit(order + 0.2, STATEMENT, reference=f"BATCH{rng.randint(10**6, 10**7 - 1)}",
                      amount=sum(parts), value_date=next_business_day(booked).isoformat(),
                      counterparty=rng.choice(variants),
                      memo=("COLLECTIVE " + " ".join(refs)) if listed else f"COLLECTIVE PAYMENT {k} ITEMS",
                      **base)
            for lid in ledger_ids:
                links[pairing_name(LEDGER, STATEMENT)].append([lid, st])
            made += k
            continue

        lid = emit(order, LEDGER, reference=ref, amount=amount, value_date=booked.isoformat(),
                   counterparty=name, memo=memo, **base)

        # the switch's view
        if rng.random() < p * 0.05:
            note("missing_switch")
            breaks[pairing_name(LEDGER, SWITCH)].append({"id": lid, "reason": "missing"})
        elif roll < p * 0.23:  # a split: one ledger entry, several switch payments
            note("split")
            k = rng.randint(2, 3)
            cents = int(amount * 100)
            cuts = sorted(rng.sample(range(1, cents), k - 1)) if cents > k else []
            pieces = [Decimal(b - a) / 100 for a, b in zip([0, *cuts], [*cuts, cents], strict=True)]
            for piece in pieces:
                sid = emit(order + 0.1, SWITCH, reference=ref, amount=piece,
                           value_date=booked.isoformat(), counterparty=variants[0], memo=memo, **base)
                links[pairing_name(LEDGER, SWITCH)].append([lid, sid])
        else:
            sref = _typo(ref, rng) if rng.random() < p * 0.2 else ref
            sid = emit(order + (3 if late else 0.1), SWITCH, reference=sref, amount=amount,
                       value_date=booked.isoformat(), counterparty=variants[0], memo=memo, **base)
            links[pairing_name(LEDGER, SWITCH)].append([lid, sid])
            if rng.random() < p * 0.05:
                note("duplicate_switch")
                dup = emit(order + (3.1 if late else 0.5), SWITCH, reference=sref, amount=amount,
                           value_date=booked.isoformat(), counterparty=variants[0], memo=memo, **base)
                breaks[pairing_name(LEDGER, SWITCH)].append({"id": dup, "reason": "duplicate"})

        # the bank statement's view
        if rng.random() < p * 0.05:
            note("missing_statement")
            breaks[pairing_name(LEDGER, STATEMENT)].append({"id": lid, "reason": "missing"})
        else:
            r = rng.random()
            if is_twin:
                stref, _ = "NONREF", note("twin")
            elif r < p * 0.3:
                stref, _ = ref[:12], note("truncated")
            elif r < p * 0.5:
                stref, _ = _typo(ref, rng), note("typo")
            elif r < p * 0.8:
                stref, _ = "NONREF", note("nonref")
            else:
                stref = ref
            stamount = amount
            wrong = rng.random() < p * 0.02
            if wrong:
                note("amount_differs")
                # Beyond any tolerance (FX and rounding stay under 0.5%): a real discrepancy.
                stamount = amount + max(Decimal(rng.randint(500, 5000)) / 100,
                                        (amount * Decimal("0.02")).quantize(Decimal("0.01")))
            elif rng.random() < p * 0.2:
                note("fx")
                stamount = (amount * Decimal(1 + rng.uniform(-0.004, 0.004))).quantize(Decimal("0.01"))
            stdate = next_business_day(booked + timedelta(days=rng.choice((0, 0, 1)))).isoformat()
            stname = rng.choice(variants)
            stmemo = reworded(memo) if is_twin else memo.upper()
            stid = emit(order + (3 if late else 0.2), STATEMENT, reference=stref, amount=stamount,
                        value_date=stdate, counterparty=stname, memo=stmemo, **base)
            if wrong:
                breaks[pairing_name(LEDGER, STATEMENT)] += [
                    {"id": lid, "reason": "amount_differs"}, {"id": stid, "reason": "amount_differs"}]
            else:
                links[pairing_name(LEDGER, STATEMENT)].append([lid, stid])
            if rng.random() < p * 0.05:
                note("duplicate_statement")
                dup = emit(order + (3.1 if late else 0.6), STATEMENT, reference=stref, amount=stamount,
                           value_date=stdate, counterparty=stname, memo=stmemo, **base)
                breaks[pairing_name(LEDGER, STATEMENT)].append({"id": dup, "reason": "duplicate"})
        if late:
            note("late")
        made += 1

    out.sort(key=lambda item: item[0])
    return FinanceScenario(
        payloads=[payload for _, payload in out],
        truth={"seed": seed, "count": count, "mess": mess, "kinds": kinds,
               "pairings": {k: {"links": links[k], "breaks": breaks[k]} for k in links}},
    )
