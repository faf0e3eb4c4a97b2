"""Tiers and access policy: the tier catalog against the schemas, and every role by every field."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from access.policy import (
    AccessReason,
    Approval,
    decide_access,
    load_policy,
    parse_policy,
)
from protection.errors import PolicyError, TierCatalogError
from protection.tiers import Tier, parse_catalog, protection_catalog
from schemas.catalog import EVENT_TYPES, schema_document

CATALOG = protection_catalog()
NOW = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)
READER = "robin"

# What the policy files say, written out by hand: role -> {typ.field: approval level}.
# Every field not listed here, and above public, must be masked for that role.
EXPECTED = {
    ("government", "social-security-officer"): {
        "attest.document.v1.subject_id": 2,
        "attest.document.v1.insurance_status": 2,
    },
    ("government", "tax-inspector"): {
        "attest.document.v1.income": 3,
        "attest.document.v1.tax_paid": 3,
    },
    ("finance", "payments-analyst"): {
        "attest.transaction.v1.reference": 1,
        "attest.transaction.v1.value_date": 1,
        "attest.transaction.v1.direction": 1,
        "attest.transaction.v1.amount": 1,
        "attest.transaction.v1.counterparty": 1,
        "attest.transaction.v1.memo": 2,
    },
    ("finance", "fraud-investigator"): {
        "attest.transaction.v1.reference": 2,
        "attest.transaction.v1.value_date": 2,
        "attest.transaction.v1.direction": 2,
        "attest.transaction.v1.amount": 2,
        "attest.transaction.v1.counterparty": 2,
        "attest.transaction.v1.memo": 2,
        "attest.transaction.v1.account": 3,
    },
}


def _approval(level: int, approver: str, decision: str = "approve", source: str | None = None,
              age: timedelta = timedelta(hours=1), policy: str = "government") -> Approval:
    default_source = "data-protection-office" if policy == "government" else "compliance-office"
    return Approval(event_id=f"ap-{level}-{approver}-{decision}", request_id="REQ-1",
                    source=source or default_source, approver=approver, level=level,
                    decision=decision, issued_at=NOW - age)


#: Approval situations a read can be in, and the highest level each one satisfies.
SITUATIONS = {
    "no approval": (lambda p: [], 1),
    "level 2 approved by the reader": (lambda p: [_approval(2, READER, policy=p)], 2),
    "level 3 approved by the reader": (lambda p: [_approval(3, READER, policy=p)], 2),
    "level 3 approved by a second person": (lambda p: [_approval(3, "kim", policy=p)], 3),
}


# -- the tier catalog ---------------------------------------------------------------------------


@pytest.mark.parametrize("typ", EVENT_TYPES)
def test_every_field_of_every_schema_has_exactly_one_tier(typ: str) -> None:
    declared = set(schema_document(typ)["properties"])
    assert set(CATALOG.schema(typ).fields) == declared


def test_identifiers_have_domain_blind_indexes() -> None:
    assert CATALOG.field("attest.transaction.v1", "account").blind_index == "account"
    assert CATALOG.field("attest.document.v1", "subject_id").blind_index == "national_id"
    assert CATALOG.field("attest.document.v1", "income").tier is Tier.RESTRICTED
    assert {"account", "national_id"} <= CATALOG.domains


def test_a_malformed_catalog_is_refused() -> None:
    good: dict[str, Any] = {"t.v1": {"table": "t", "subject": {"field": "id", "domain": "d"},
                                     "department": "dep",
                                     "fields": {"id": {"tier": "internal", "blind_index": "d"},
                                                "dep": "public"}}}
    parse_catalog(good)
    broken = [
        {"t.v1": {**good["t.v1"], "fields": {"id": "secret", "dep": "public"}}},
        {"t.v1": {**good["t.v1"], "fields": {"id": {"tier": "public", "blind_index": "d"},
                                             "dep": "public"}}},
        {"t.v1": {**good["t.v1"], "department": "id"}},
        {"t.v1": {**good["t.v1"], "subject": {"field": "nope", "domain": "d"}}},
        {"t.v1": {**good["t.v1"], "subject": {"field": "id", "domain": "other"}}},
    ]
    for document in broken:
        with pytest.raises(TierCatalogError):
            parse_catalog(document)


# -- the role-by-field matrix -----------------------------------------------------------------


def test_the_policies_have_exactly_the_roles_of_the_matrix() -> None:
    for name in ("government", "finance"):
        expected = {role for policy, role in EXPECTED if policy == name}
        assert set(load_policy(name).roles) == expected


MATRIX = [
    (policy, role, spec.schema, spec.name, situation)
    for (policy, role), spec, situation in itertools.product(
        EXPECTED, list(CATALOG.all_fields()), SITUATIONS)
]


@pytest.mark.parametrize(("policy_name", "role", "typ", "field_name", "situation"), MATRIX,
                         ids=["/".join(m) for m in MATRIX])
def test_role_by_field(policy_name: str, role: str, typ: str, field_name: str,
                       situation: str) -> None:
    policy = load_policy(policy_name)
    spec = CATALOG.field(typ, field_name)
    approvals, satisfied = SITUATIONS[situation]
    decision = decide_access(policy, role, spec, approvals(policy_name), reader=READER, now=NOW)
    level = EXPECTED[(policy_name, role)].get(f"{typ}.{field_name}")
    if spec.tier is Tier.PUBLIC:
        assert decision.allowed and decision.reason is AccessReason.PUBLIC
    elif level is None:
        assert not decision.allowed and decision.reason is AccessReason.NOT_GRANTED
    else:
        assert decision.level == level
        assert decision.allowed == (level <= satisfied), decision
        if not decision.allowed:
            assert decision.reason in (AccessReason.APPROVAL_MISSING,
                                       AccessReason.SECOND_PERSON_REQUIRED)


def test_every_protected_field_is_masked_for_a_role_of_the_other_policy() -> None:
    # A tax inspector reads nothing of transactions; a payments analyst nothing of documents.
    government, finance = load_policy("government"), load_policy("finance")
    for spec in CATALOG.schema("attest.transaction.v1").protected_fields:
        assert not decide_access(government, "tax-inspector", spec, [], reader=READER,
                                 now=NOW).allowed
    for spec in CATALOG.schema("attest.document.v1").protected_fields:
        assert not decide_access(finance, "payments-analyst", spec, [], reader=READER,
                                 now=NOW).allowed


def test_the_tiers_a_role_holds_are_the_tiers_of_its_fields() -> None:
    government = load_policy("government")
    assert government.role("social-security-officer").tiers == {Tier.PUBLIC, Tier.CONFIDENTIAL}
    assert government.role("tax-inspector").tiers == {Tier.PUBLIC, Tier.RESTRICTED}


# -- approvals ------------------------------------------------------------------------------------


def _decide(approvals: list[Approval], reader: str = READER) -> tuple[bool, AccessReason]:
    policy = load_policy("government")
    decision = decide_access(policy, "tax-inspector", CATALOG.field("attest.document.v1", "income"),
                             approvals, reader=reader, now=NOW)
    return decision.allowed, decision.reason


def test_a_level_3_read_needs_a_second_person() -> None:
    assert _decide([_approval(3, "kim")]) == (True, AccessReason.APPROVED)
    assert _decide([_approval(3, READER)]) == (False, AccessReason.SECOND_PERSON_REQUIRED)
    assert _decide([_approval(3, "Robin@tax-bureau")]) == (False,
                                                          AccessReason.SECOND_PERSON_REQUIRED)
    assert _decide([_approval(2, "kim")]) == (False, AccessReason.APPROVAL_MISSING)


def test_only_valid_approvals_count() -> None:
    assert _decide([_approval(3, "kim", source="tax-bureau")])[0] is False      # not an approver
    assert _decide([_approval(3, "kim", age=timedelta(days=31))])[0] is False   # expired
    assert _decide([_approval(3, "kim", age=-timedelta(hours=1))])[0] is False  # from the future
    assert _decide([_approval(3, "kim", decision="deny")]) == (False, AccessReason.DENIED)
    # One recorded denial vetoes an approval of the same request.
    assert _decide([_approval(3, "kim"), _approval(2, "lee", decision="deny")]) == (
        False, AccessReason.DENIED)


def test_the_decision_names_the_approvals_it_relied_on() -> None:
    policy = load_policy("government")
    spec = CATALOG.field("attest.document.v1", "income")
    decision = decide_access(policy, "tax-inspector", spec,
                             [_approval(3, "kim"), _approval(3, READER)], reader=READER, now=NOW)
    assert decision.approval_ids == ("ap-3-kim-approve",)


def test_an_unknown_role_reads_no_protected_field() -> None:
    policy = load_policy("government")
    spec = CATALOG.field("attest.document.v1", "subject_id")
    decision = decide_access(policy, "intern", spec, [], reader=READER, now=NOW)
    assert (decision.allowed, decision.reason) == (False, AccessReason.UNKNOWN_ROLE)
    with pytest.raises(PolicyError, match="no role 'intern'"):
        policy.role("intern")


# -- policy files -----------------------------------------------------------------------------------


def _policy(**role: Any) -> dict[str, Any]:
    return {"policy": "p", "departments": {"d": {"db_role": "attest_d", "rows": ["*"]}},
            "roles": {"r": {"department": "d", **role}}}


@pytest.mark.parametrize(("role", "message"), [
    ({"tiers": ["confidential"], "fields": {"attest.document.v1": {"income": 1}}},
     "does not hold that tier"),
    ({"tiers": ["restricted"], "fields": {"attest.document.v1": {"salary": 1}}}, "salary"),
    ({"tiers": ["restricted"], "fields": {"attest.document.v1": {"agency": 1}}}, "public"),
    ({"tiers": ["restricted"], "fields": {"attest.document.v1": {"income": 4}}}, "1, 2 or 3"),
    ({"tiers": ["top-secret"], "fields": {}}, "unknown tier"),
    ({"department": "nowhere", "tiers": [], "fields": {}}, "unknown department"),
])
def test_a_wrong_policy_is_refused(role: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy(_policy(**role), CATALOG)


def test_department_roles_must_be_attest_roles() -> None:
    document = _policy(tiers=[], fields={})
    document["departments"]["d"]["db_role"] = "postgres; drop table events"
    with pytest.raises(PolicyError, match="db_role"):
        parse_policy(document, CATALOG)
