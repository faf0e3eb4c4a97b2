"""Reads through the real service (HTTP) and Postgres: department, role and fields come from the token."""

from __future__ import annotations

import json

from audit.queries import find_records
from scenarios.government import SOCIAL_SECURITY, TAX_BUREAU
from schemas.audit import AuditAction
from schemas.catalog import DOCUMENT_V1
from tests.access.conftest import AccessWorld


def _values(response_text: str, *secrets: str) -> list[str]:
    return [s for s in secrets if s and s in response_text]


def test_the_openapi_document_is_the_contract(world: AccessWorld) -> None:
    spec = world.client.get("/openapi.json").json()
    assert {"/v1/me", "/v1/reads", "/v1/requests", "/v1/requests/{request_id}",
            "/v1/requests/{request_id}/decisions", "/v1/me/approval-key"} <= set(spec["paths"])
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    read = spec["paths"]["/v1/reads"]["post"]
    assert read["security"] == [{"HTTPBearer": []}]
    assert {"purpose", "request_id", "subject"} <= set(
        spec["components"]["schemas"]["ReadBody"]["properties"])
    assert "role" in spec["components"]["schemas"]["ReadBody"]["properties"]
    assert "policy" not in json.dumps(spec["components"]["schemas"]["ReadBody"])


def test_a_tax_token_cannot_read_social_security_fields_whatever_it_asks(world: AccessWorld) -> None:
    ss_doc = world.doc(SOCIAL_SECURITY)
    secrets = (ss_doc["insurance_status"], ss_doc["subject_id"], ss_doc["subject_id"].replace(" ", ""))
    tries = [
        {"role": "social-security-officer"},
        {"subject": world.population[0].national_id},
        {"event_id": ss_doc["event_id"]},
        {"typ": DOCUMENT_V1, "event_id": ss_doc["event_id"]},
        {"source": SOCIAL_SECURITY, "limit": 1000},
    ]
    for body in tries:
        response = world.read("tess", **body)
        assert response.status_code in (200, 403), response.text
        assert not _values(response.text, *secrets), body
        if response.status_code == 200:
            for record in response.json()["records"]:
                assert record["department"] == TAX_BUREAU  # row-level security
                fields = {f["name"]: f for f in record["fields"]}
                assert fields["insurance_status"]["state"] == "masked"
                assert fields["subject_id"]["state"] == "masked"
    asked = world.post("tess", "/v1/requests", {
        "purpose": "curious", "typ": DOCUMENT_V1, "subject": world.population[0].national_id,
        "fields": ["insurance_status", "subject_id"]})
    assert asked.status_code == 403
    assert world.read("tess", role="tax-inspector").status_code == 200  # its own role works
    refusals = [r for r in find_records(world.url, action=AuditAction.FIELDS_READ)
                if r.outcome == "rejected" and r.actor == "person:tess"]
    assert any(r.detail["role"] == "social-security-officer" and r.reason == "forbidden"
               for r in refusals)  # refused reads are on the record too


def test_no_purpose_or_no_reading_role_is_refused(world: AccessWorld) -> None:
    assert world.post("tess", "/v1/reads", {"purpose": "  "}).status_code == 400
    empty = world.read("tess", subject=" - ")
    assert empty.status_code == 400 and "empty" in empty.json()["detail"]
    response = world.read("nora")  # a clerk: no reading role in any policy
    assert response.status_code == 403 and "role" in response.json()["detail"]


def test_level_3_fields_are_masked_without_a_request_and_the_read_is_audited(world: AccessWorld) -> None:
    doc = world.doc(TAX_BUREAU)
    response = world.read("tess", subject=world.population[0].national_id)
    assert response.status_code == 200, response.text
    (record,) = response.json()["records"]
    fields = {f["name"]: f for f in record["fields"]}
    assert record["event_id"] == doc["event_id"]
    assert fields["income"] == {"name": "income", "tier": "restricted", "state": "masked",
                                "value": None, "note": "approval_missing"}
    assert fields["agency"]["value"] == TAX_BUREAU and doc["income"] not in response.text
    (audit,) = find_records(world.url, correlation_ids=[response.json()["read_id"]])
    assert audit.action == AuditAction.FIELDS_READ and audit.actor == "person:tess"
    assert audit.detail["department"] == "tax-bureau" and audit.detail["role"] == "tax-inspector"
    assert audit.subject_ids == [doc["event_id"]]
    assert world.population[0].national_id not in audit.to_bytes().decode()


def test_level_2_fields_need_one_approver(world: AccessWorld) -> None:
    person = world.population[1]
    request = world.post("sam", "/v1/requests", {
        "purpose": "benefit claim", "typ": DOCUMENT_V1, "subject": person.national_id,
        "fields": ["insurance_status", "subject_id"]}).json()
    assert request["level"] == 2 and request["needed"] == 1 and request["state"] == "pending"
    before = world.read("sam", request_id=request["request_id"]).json()
    assert all(f["state"] == "masked" for r in before["records"] for f in r["fields"]
               if f["name"] == "insurance_status")
    assert world.decide("dana", request, person=person.national_id).status_code == 201
    after = world.read("sam", request_id=request["request_id"])
    (record,) = after.json()["records"]
    fields = {f["name"]: f for f in record["fields"]}
    assert fields["insurance_status"]["value"] == person.insurance_status
    assert fields["subject_id"]["value"].replace(" ", "") == person.national_id
    assert fields["body"]["state"] == "masked"


def test_lookups_by_identifier_are_rate_limited(world: AccessWorld) -> None:
    from access.ratelimit import SlidingWindowLimit

    saved = world.service._limit
    world.service._limit = SlidingWindowLimit(2)
    try:
        codes = [world.read("tess", subject=world.population[2].national_id).status_code
                 for _ in range(3)]
        assert codes == [200, 200, 429]
        assert world.read("tess").status_code == 200  # reads without an identifier still work
    finally:
        world.service._limit = saved


def test_caller_text_that_could_not_be_audited_is_refused_at_the_door(world: AccessWorld) -> None:
    """Review findings M3, M4, L1: a purpose with U+0000 made the refusal's audit record
    unwritable (so the probe left no trace); a non-UUID event id echoed the driver's error;
    an absurd validity overflowed into a 500."""
    for purpose in ("x\x00y", "escape\x1binside"):
        assert world.post("tess", "/v1/reads", {"purpose": purpose}).status_code == 422
    # A lone surrogate arrives as a JSON escape (it has no UTF-8 form of its own).
    escaped = world.client.post("/v1/reads", content=b'{"purpose": "x\\ud800y"}',
                                headers={**world.auth("tess"), "Content-Type": "application/json"})
    assert escaped.status_code == 422
    bad_id = world.post("tess", "/v1/reads", {"purpose": "audit", "event_id": "not-a-uuid"})
    assert bad_id.status_code == 422 and "syntax" not in bad_id.text
    request = {"purpose": "check", "typ": "attest.document.v1", "subject": "123",
               "fields": ["income"], "valid_for_hours": 1e20}
    assert world.post("tess", "/v1/requests", request).status_code == 422
