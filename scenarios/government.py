"""Government scenario: documents that two agencies hold about the same people, and approvals.

The tax bureau files tax returns (``income``, ``tax_paid``); the social security bureau files
contribution records (``insurance_status``). Both name the person by national id, each in its
own house style ("1234 5678 9012" at one, "1234-5678-9012" at the other), so joins work only
after normalization: exactly what the national-id blind index does. Data-sharing requests are
approved or denied by the data protection office with ``attest.approval.v1`` events.

Deterministic for a given seed, so tests and benchmarks are repeatable.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

TAX_BUREAU = "tax-bureau"
SOCIAL_SECURITY = "social-security-bureau"
DATA_PROTECTION_OFFICE = "data-protection-office"
AGENCIES = (TAX_BUREAU, SOCIAL_SECURITY)
INSURANCE = ("insured", "insured", "insured", "uninsured", "pending")
FIRST = ("Ada", "Bruno", "Chiara", "Dmitri", "Elif", "Farah", "Goran", "Hana", "Ines", "Jonas")
LAST = ("Keller", "Novak", "Rossi", "Weber", "Silva", "Horvat", "Meyer", "Costa", "Berg")


@dataclass(frozen=True)
class Person:
    """Ground truth about one person: what each agency's documents should say."""

    national_id: str  # canonical: 12 digits
    name: str
    income: str
    insurance_status: str


def _stamp(now: datetime) -> str:
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def written(national_id: str, agency: str) -> str:
    """How ``agency`` writes a national id: groups of four, spaced or hyphenated."""
    groups = [national_id[i:i + 4] for i in range(0, len(national_id), 4)]
    return ("-" if agency == TAX_BUREAU else " ").join(groups)


def people(count: int, seed: int | None = None) -> list[Person]:
    """``count`` distinct people with incomes and insurance statuses."""
    rng = random.Random(seed)
    out: list[Person] = []
    seen: set[str] = set()
    while len(out) < count:
        nid = f"{rng.randint(10**11, 10**12 - 1)}"
        if nid in seen:
            continue
        seen.add(nid)
        out.append(Person(
            national_id=nid,
            name=f"{rng.choice(FIRST)} {rng.choice(LAST)}",
            income=f"{rng.randint(18_000, 240_000)}.{rng.randint(0, 99):02d}",
            insurance_status=rng.choice(INSURANCE),
        ))
    return out


def document_payloads(
    count: int, seed: int | None = None, now: datetime | None = None,
    population: list[Person] | None = None,
) -> list[dict[str, Any]]:
    """``count`` attest.document.v1 payloads, alternating tax returns and contribution records.

    Each person of ``population`` (default: ``count // 2`` people from the same seed) appears
    at both agencies, so every tax return has a contribution record to join with.
    """
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    population = population or people(max(1, count // 2), seed)
    year = now.year - 1
    payloads = []
    for i in range(count):
        person = population[(i // 2) % len(population)]
        agency = AGENCIES[i % 2]
        common = {
            "event_id": _event_id(rng),
            "source": agency,
            "issued_at": _stamp(now),
            "document_id": f"{'TR' if agency == TAX_BUREAU else 'CR'}-{year}-{rng.randint(10**7, 10**8 - 1)}",
            "agency": agency,
            "subject_id": written(person.national_id, agency),
        }
        if agency == TAX_BUREAU:
            tax = f"{float(person.income) * rng.uniform(0.12, 0.38):.2f}"
            payloads.append({
                **common,
                "title": f"Tax return {year}",
                "body": f"Annual income declaration of {person.name} for {year}; "
                        f"assessed and paid in {rng.randint(1, 12)} instalments.",
                "income": person.income,
                "tax_paid": tax,
            })
        else:
            payloads.append({
                **common,
                "title": f"Contribution record {year}",
                "body": f"Social insurance contributions of {person.name} for {year}, "
                        f"{rng.randint(6, 12)} months recorded.",
                "insurance_status": person.insurance_status,
            })
    return payloads


def approval_payload(
    request_id: str,
    approver: str,
    level: int,
    decision: str = "approve",
    reason: str | None = None,
    seed: int | None = None,
    now: datetime | None = None,
    source: str = DATA_PROTECTION_OFFICE,
) -> dict[str, Any]:
    """One attest.approval.v1 payload deciding a data-sharing request."""
    rng = random.Random(seed)
    payload: dict[str, Any] = {
        "event_id": _event_id(rng),
        "source": source,
        "issued_at": _stamp(now or datetime.now(UTC)),
        "request_id": request_id,
        "approver": approver,
        "level": level,
        "decision": decision,
    }
    if reason is not None:
        payload["reason"] = reason
    return payload


# -- the consistency scenario: the same people at both agencies, some inconsistent -----------

INJECTED = ("income_without_insurance", "insured_without_income", "tax_exceeds_income",
            "missing_at_agency")


def consistency_scenario(
    count: int, seed: int | None = None, rate: float = 0.1, now: datetime | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Tax returns and contribution records of ``count`` people; ``rate`` of them inconsistent.

    Consistent people are insured (or pending) with an income and a tax below it. Each
    inconsistent person gets exactly one injected rule (``INJECTED``). Returns the payloads
    and the truth: ``{"inconsistent": {national_id: rule}}`` (canonical 12-digit ids).
    """
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    year = now.year - 1
    truth: dict[str, str] = {}
    payloads: list[dict[str, Any]] = []
    for person in people(count, seed):
        income = Decimal(person.income)
        status = rng.choice(("insured", "insured", "pending"))
        tax = (income * Decimal(str(round(rng.uniform(0.12, 0.38), 4)))).quantize(Decimal("0.01"))
        rule = rng.choice(INJECTED) if rng.random() < rate else None
        if rule == "income_without_insurance":
            status = "uninsured"
        elif rule == "insured_without_income":
            income, tax, status = Decimal("0.00"), Decimal("0.00"), "insured"
        elif rule == "tax_exceeds_income":
            tax = (income * Decimal("1.2")).quantize(Decimal("0.01"))
        if rule:
            truth[person.national_id] = rule
        dropped = rng.choice(AGENCIES) if rule == "missing_at_agency" else None
        for agency in AGENCIES:
            if agency == dropped:
                continue
            prefix = "TR" if agency == TAX_BUREAU else "CR"
            common = {
                "event_id": _event_id(rng), "source": agency, "issued_at": _stamp(now),
                "document_id": f"{prefix}-{year}-{rng.randint(10**7, 10**8 - 1)}",
                "agency": agency, "subject_id": written(person.national_id, agency),
            }
            if agency == TAX_BUREAU:
                payloads.append({**common, "title": f"Tax return {year}",
                                 "body": f"Annual income declaration of {person.name} for {year}.",
                                 "income": f"{income:.2f}", "tax_paid": f"{tax:.2f}"})
            else:
                payloads.append({**common, "title": f"Contribution record {year}",
                                 "body": f"Social insurance contributions of {person.name} for {year}.",
                                 "insurance_status": status})
    rng.shuffle(payloads)
    return payloads, {"seed": seed, "count": count, "inconsistent": truth}
