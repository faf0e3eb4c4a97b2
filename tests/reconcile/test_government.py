"""Cross-agency consistency: every injected inconsistency flagged, no consistent person."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

from agents.messages import IncomingMessage
from agents.reconciliation import ConsistencyStage
from protection.blind_index import BlindIndexKey, blind_index
from reconcile.government import (
    SOCIAL_SECURITY,
    TAX_BUREAU,
    check_all,
    facts_from_payload,
    readable_fields,
    readable_from_policy,
    score_government,
)
from scenarios.government import consistency_scenario
from schemas.audit import AuditAction
from schemas.catalog import DOCUMENT_V1
from security.verification import VerifiedEvent
from storage.reconciliation import list_breaks
from tests.support.databases import scratch_database

NOW = datetime(2026, 12, 1, tzinfo=UTC)
KEY = BlindIndexKey("national_id", os.urandom(32))
READABLE = readable_from_policy("government")


def index(nid: str) -> str:
    return blind_index(KEY, nid).hex()


def test_readable_fields_come_from_the_policy():
    policy = {"roles": {"r": {"department": "d", "fields": {"attest.document.v1": {"x": 2}}}}}
    assert readable_fields(policy) == {"d": frozenset({"x"})}
    assert READABLE[SOCIAL_SECURITY] == {"subject_id", "insurance_status"}
    assert READABLE[TAX_BUREAU] == {"income", "tax_paid"}


def test_every_injected_inconsistency_and_no_consistent_person():
    payloads, truth = consistency_scenario(500, seed=9, rate=0.2, now=NOW)
    found = check_all([facts_from_payload(p, index) for p in payloads], READABLE)
    result = score_government(found, truth, index)
    assert result["injected"] > 50 and result["missed"] == 0 and result["consistent_flagged"] == 0, result
    rules = {d.rule: d.visible_to for d in found}
    assert rules["tax_exceeds_income"] == (TAX_BUREAU,)
    assert rules["income_without_insurance"] == (SOCIAL_SECURITY, TAX_BUREAU)
    assert rules["missing_at_agency"] == (SOCIAL_SECURITY,)


def test_the_join_is_on_the_blind_index_of_differently_written_ids():
    payloads, _ = consistency_scenario(3, seed=1, rate=0.0, now=NOW)
    written = {p["agency"]: p["subject_id"] for p in payloads if p["subject_id"].replace("-", "")
               .replace(" ", "") == payloads[0]["subject_id"].replace("-", "").replace(" ", "")}
    assert written[TAX_BUREAU] != written[SOCIAL_SECURITY]
    assert index(written[TAX_BUREAU]) == index(written[SOCIAL_SECURITY])


@pytest.mark.integration
async def test_consistency_stage_stores_and_audits_without_values(stack_settings, database_url):
    payloads, truth = consistency_scenario(120, seed=5, rate=0.25, now=NOW)
    pairs = [(IncomingMessage("d", 0, i, None, b"", NOW),
              VerifiedEvent(p["event_id"], p["source"], "k", "Ed25519", DOCUMENT_V1, NOW, p))
             for i, p in enumerate(payloads)]
    with scratch_database(database_url, "gov") as url:
        settings = stack_settings.model_copy(update={"database_url": url})
        stage = ConsistencyStage(settings, "worker:test", KEY, READABLE)
        half = len(pairs) // 2
        outputs = [await stage.process(pairs[:half])]
        restarted = ConsistencyStage(settings, "worker:test", KEY, READABLE)  # pending from Postgres
        outputs += [await restarted.process(pairs[half:]), await restarted.flush()]
        found = [d for o in outputs for d in o.discrepancies]
        assert score_government(found, truth, index)["missed"] == 0
        assert score_government(found, truth, index)["consistent_flagged"] == 0
        audit = [r for o in outputs for r in o.audit]
        assert {r.action for r in audit} == {AuditAction.RECON_INCONSISTENT} and len(audit) == len(found)
        stored = list_breaks(url)
        assert {b.reason for b in stored} == {d.rule[:32] for d in found}
        for payload in payloads:
            for field in ("income", "tax_paid", "subject_id"):
                if field in payload:
                    assert str(payload[field]) not in str(audit)


@pytest.mark.integration
async def test_a_document_alone_past_the_window_is_missing_without_a_flush(stack_settings, database_url):
    from datetime import timedelta

    payloads, truth = consistency_scenario(6, seed=11, rate=0.0, now=NOW)
    lonely = payloads[0]
    partner = next(p for p in payloads if p["subject_id"].replace("-", "").replace(" ", "")
                   == lonely["subject_id"].replace("-", "").replace(" ", "") and p is not lonely)
    others = [p for p in payloads if p not in (lonely, partner)]

    def pair(i, p, at):
        return (IncomingMessage("d", 0, i, None, b"", at),
                VerifiedEvent(p["event_id"], p["source"], "k", "Ed25519", DOCUMENT_V1, at, p))

    with scratch_database(database_url, "gov") as url:
        stage = ConsistencyStage(stack_settings.model_copy(update={"database_url": url}), "w", KEY, READABLE)
        first = await stage.process([pair(0, lonely, NOW)])
        assert first.discrepancies == []
        later = NOW + timedelta(days=stack_settings.recon_window_days + 1)
        out = await stage.process([pair(i + 1, p, later) for i, p in enumerate(others)])
        found = [(d.rule, d.event_ids) for d in out.discrepancies]
        assert found == [("missing_at_agency", (lonely["event_id"],))]
        assert truth["inconsistent"] == {}
