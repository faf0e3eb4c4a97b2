"""The access rule for model labels, without a database: a label is readable exactly when
every field the model read is (issue 14, item 7)."""

from __future__ import annotations

from access.policy import AccessDecision, AccessReason
from inference.labels import LABEL_SOURCES, label_decisions, label_typ, row_id
from protection.tiers import Tier, protection_catalog
from schemas.catalog import DOCUMENT_V1, TRANSACTION_V1


def _decisions(typ: str, **allowed: tuple[bool, AccessReason, int]) -> dict[str, AccessDecision]:
    schema = protection_catalog().schema(typ)
    return {name: AccessDecision(schema.field(name), "analyst", ok, reason, level, ("a1",))
            for name, (ok, reason, level) in allowed.items()}


def test_a_label_is_allowed_only_when_every_source_field_is() -> None:
    assert LABEL_SOURCES[TRANSACTION_V1] == ("counterparty", "memo")
    both = _decisions(TRANSACTION_V1, counterparty=(True, AccessReason.GRANTED, 1),
                      memo=(True, AccessReason.APPROVED, 2))
    out = label_decisions(TRANSACTION_V1, both)
    assert set(out) == {"label", "score"}
    for name, decision in out.items():
        assert decision.allowed and decision.reason is AccessReason.APPROVED
        assert decision.level == 2 and decision.approval_ids == ("a1",)
        assert decision.field.name == name and decision.field.tier is Tier.CONFIDENTIAL
        assert decision.field.schema == label_typ(TRANSACTION_V1)

    one_refused = _decisions(TRANSACTION_V1, counterparty=(True, AccessReason.GRANTED, 1),
                             memo=(False, AccessReason.APPROVAL_MISSING, 2))
    assert {(d.allowed, d.reason) for d in label_decisions(TRANSACTION_V1, one_refused).values()} \
        == {(False, AccessReason.APPROVAL_MISSING)}

    # A source field the caller did not decide on is a refusal, never a default allow.
    missing = _decisions(DOCUMENT_V1, title=(True, AccessReason.GRANTED, 1))
    assert {(d.allowed, d.reason) for d in label_decisions(DOCUMENT_V1, missing).values()} \
        == {(False, AccessReason.NOT_GRANTED)}


def test_a_label_is_bound_to_its_row() -> None:
    assert row_id("e1", "document_type", "m@1") == "e1|document_type|m@1"
    assert label_typ(DOCUMENT_V1) == f"{DOCUMENT_V1}#inference"
