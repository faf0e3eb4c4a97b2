"""Cross-agency consistency rules, joined on the national-id blind index, never on plaintext.

Each agency's document about a person becomes ``AgencyFacts`` keyed by the blind index of
the national id (the same key for every agency, so the tax bureau's "1234-5678-9012" and
the social security bureau's "1234 5678 9012" join). ``check_person`` applies every rule to
one person's facts; a ``Discrepancy`` names the rule, the documents involved and the
departments whose policy lets them read at least one of the rule's fields. It carries no
field value: what the values were is for an authorised read through the access service.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

TAX_BUREAU = "tax-bureau"
SOCIAL_SECURITY = "social-security-bureau"
#: The ``pairing`` of a government discrepancy's row in ``recon_breaks``.
GOVERNMENT_PAIRING = f"{TAX_BUREAU}~{SOCIAL_SECURITY}"
#: Declared income at or above this (a year's minimum employment income) means someone
#: should be insured; below it, being uninsured is plausible.
INSURABLE_INCOME = Decimal("6000")
#: Contribution base and declared income may differ by this share (timing, allowances).
BASE_TOLERANCE = Decimal("0.10")


@dataclass(frozen=True, slots=True)
class AgencyFacts:
    """What one agency's document says about one person (person only as blind index)."""

    person_key: str
    agency: str
    event_id: str
    income: Decimal | None = None
    tax_paid: Decimal | None = None
    insurance_status: str | None = None
    contribution_base: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Discrepancy:
    rule: str
    person_key: str
    event_ids: tuple[str, ...]
    agencies: tuple[str, ...]
    visible_to: tuple[str, ...]

    @property
    def discrepancy_id(self) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"attest.recon.gov:{self.rule}|{self.person_key}"))


def _dec(value: object) -> Decimal | None:
    return Decimal(str(value)) if value not in (None, "") else None


def facts_from_payload(payload: Mapping[str, Any], person_index: Callable[[str], str]) -> AgencyFacts:
    """``person_index``: national id -> hex blind index (``protection.blind_index``, national_id)."""
    return AgencyFacts(
        person_key=person_index(str(payload["subject_id"])), agency=str(payload["agency"]),
        event_id=str(payload["event_id"]), income=_dec(payload.get("income")),
        tax_paid=_dec(payload.get("tax_paid")), insurance_status=payload.get("insurance_status"),
        contribution_base=_dec(payload.get("contribution_base")),
    )


Rule = Callable[[AgencyFacts, AgencyFacts], bool]

#: name -> (fields the rule reads, predicate over (tax return, contribution record)).
RULES: dict[str, tuple[frozenset[str], Rule]] = {
    "income_without_insurance": (
        frozenset({"income", "insurance_status"}),
        lambda tax, ssb: tax.income is not None and tax.income >= INSURABLE_INCOME
        and ssb.insurance_status == "uninsured",
    ),
    "insured_without_income": (
        frozenset({"income", "insurance_status"}),
        lambda tax, ssb: tax.income is not None and tax.income == 0 and ssb.insurance_status == "insured",
    ),
    "tax_exceeds_income": (
        frozenset({"income", "tax_paid"}),
        lambda tax, ssb: tax.income is not None and tax.tax_paid is not None and tax.tax_paid > tax.income,
    ),
    "income_differs_from_contribution_base": (
        frozenset({"income", "contribution_base"}),
        lambda tax, ssb: tax.income is not None and ssb.contribution_base is not None
        and abs(tax.income - ssb.contribution_base) > BASE_TOLERANCE * max(tax.income, Decimal(1)),
    ),
}
MISSING_RULE = "missing_at_agency"
MISSING_FIELDS = frozenset({"subject_id"})


#: ``recon_breaks.reason`` holds 32 characters; one rule name is longer and is stored cut.
STORED_REASON_LENGTH = 32


def rule_named(reason: str) -> str:
    """The full rule name of a stored reason (``income_differs_from_contribution_base`` is
    stored as its first 32 characters); a reason that is no rule comes back as it is."""
    for name in (*RULES, MISSING_RULE):
        if reason in (name, name[:STORED_REASON_LENGTH]):
            return name
    return reason


def rule_fields(rule: str) -> frozenset[str]:
    """The fields a rule compares (none for a name that is no rule: visible to nobody)."""
    rule = rule_named(rule)
    if rule == MISSING_RULE:
        return MISSING_FIELDS
    return RULES[rule][0] if rule in RULES else frozenset()


def visible_to(fields: frozenset[str], readable: Mapping[str, frozenset[str]]) -> tuple[str, ...]:
    """Departments whose policy lets them read at least one of ``fields``."""
    return tuple(sorted(d for d, allowed in readable.items() if allowed & fields))


def check_person(facts: Iterable[AgencyFacts], readable: Mapping[str, frozenset[str]],
                 complete: bool = True) -> list[Discrepancy]:
    """Every rule that fires for one person. ``complete``: the person's window has closed, so
    a document missing at one agency is itself a discrepancy."""
    by_agency: dict[str, AgencyFacts] = {}
    for f in facts:
        by_agency.setdefault(f.agency, f)
    tax, ssb = by_agency.get(TAX_BUREAU), by_agency.get(SOCIAL_SECURITY)
    if tax is None or ssb is None:
        present = next(iter(by_agency.values()), None)
        if not complete or present is None:
            return []
        return [Discrepancy(MISSING_RULE, present.person_key, (present.event_id,), (present.agency,),
                            visible_to(MISSING_FIELDS, readable))]
    return [
        Discrepancy(name, tax.person_key, (tax.event_id, ssb.event_id), (TAX_BUREAU, SOCIAL_SECURITY),
                    visible_to(fields, readable))
        for name, (fields, rule) in RULES.items() if rule(tax, ssb)
    ]


def check_all(facts: Iterable[AgencyFacts], readable: Mapping[str, frozenset[str]]) -> list[Discrepancy]:
    people: dict[str, list[AgencyFacts]] = defaultdict(list)
    for f in facts:
        people[f.person_key].append(f)
    return [d for key in sorted(people) for d in check_person(people[key], readable)]


def readable_fields(
    policy: Mapping[str, Any], schema: str = "attest.document.v1"
) -> dict[str, frozenset[str]]:
    """department -> fields of ``schema`` its roles may read, from a policy document."""
    out: dict[str, set[str]] = defaultdict(set)
    for role in policy.get("roles", {}).values():
        out[role["department"]].update(role.get("fields", {}).get(schema, {}))
    return {d: frozenset(f) for d, f in out.items()}


def score_government(found: Iterable[Discrepancy], truth: Mapping[str, Any],
                     person_index: Callable[[str], str]) -> dict[str, Any]:
    """Injected inconsistencies flagged (with their rule), and consistent people flagged."""
    expected = {person_index(nid): rule for nid, rule in truth["inconsistent"].items()}
    flagged: dict[str, set[str]] = defaultdict(set)
    for d in found:
        flagged[d.person_key].add(d.rule)
    caught = sum(1 for key, rule in expected.items() if rule in flagged.get(key, set()))
    false = sorted(key for key in flagged if key not in expected)
    return {"injected": len(expected), "flagged_correctly": caught, "missed": len(expected) - caught,
            "consistent_flagged": len(false)}


def readable_from_policy(source: str = "government") -> dict[str, frozenset[str]]:
    """``readable_fields`` of a bundled policy name or a policy file path."""
    import yaml

    from access.policy import policy_path

    return readable_fields(yaml.safe_load(policy_path(source).read_text(encoding="utf-8")))
