"""Level-3 reads (the tax bureau's income and tax paid) through the real service and Postgres.

Each way of cheating the control group is tried: too few approvers, the same one twice, the
requester, an approval of another request, an expired request, rows inserted by SQL. Only two
distinct, valid, attested approvals by authorised approvers other than the requester unlock.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import text

from access.approvals import sign_decision
from access.issuer import load_person_key
from audit.queries import find_records
from scenarios.government import TAX_BUREAU
from storage.db import engine_for
from tests.access.conftest import AccessWorld


def _income(world: AccessWorld, who: str, request: dict[str, Any]) -> dict[str, Any]:
    response = world.read(who, request_id=request["request_id"])
    assert response.status_code == 200, response.text
    (record,) = response.json()["records"]
    return {f["name"]: f for f in record["fields"]}["income"]


def _copy_approvals(world: AccessWorld, source: str, target: str) -> int:
    """Copy a request's stored decisions onto a request (new ids), as an SQL user could."""
    with engine_for(world.url).begin() as conn:
        return conn.execute(text(
            "INSERT INTO access_approvals (id, request_id, approver, decision, approver_kid, "
            "approver_department, approver_roles, jws, attestation) "
            "SELECT gen_random_uuid(), CAST(:target AS uuid), approver, decision, approver_kid, "
            "approver_department, approver_roles, jws, attestation FROM access_approvals "
            "WHERE request_id = CAST(:source AS uuid)"
        ), {"source": source, "target": target}).rowcount


def test_two_distinct_approvals_unlock_the_fields_and_the_read_names_them(world: AccessWorld) -> None:
    doc = world.doc(TAX_BUREAU)
    request = world.request("tess")
    assert request["level"] == 3 and request["needed"] == 2
    assert world.decide("dana", request).status_code == 201
    after_one = world.decide("dora", request)
    assert after_one.status_code == 201 and after_one.json()["state"] == "approved"
    response = world.read("tess", request_id=request["request_id"])
    (record,) = response.json()["records"]
    fields = {f["name"]: f for f in record["fields"]}
    assert fields["income"] == {"name": "income", "tier": "restricted", "state": "clear",
                                "value": doc["income"], "note": None}
    assert fields["tax_paid"]["value"] == doc["tax_paid"]
    assert fields["subject_id"]["state"] == "masked"  # not the tax bureau's field
    (audit,) = find_records(world.url, correlation_ids=[response.json()["read_id"]])
    assert audit.detail["request_id"] == request["request_id"]
    assert len(audit.detail["approvals"]) == 2
    assert audit.detail["fields"] == ["attest.document.v1.income", "attest.document.v1.tax_paid"]


def test_one_approval_is_not_enough(world: AccessWorld) -> None:
    request = world.request("tess")
    assert world.decide("dana", request).json()["state"] == "pending"
    income = _income(world, "tess", request)
    assert income["state"] == "masked" and income["note"] == "second_person_required"


def test_the_same_approver_twice_counts_once(world: AccessWorld) -> None:
    request = world.request("tess")
    assert world.decide("dana", request).status_code == 201
    again = world.decide("dana", request)
    assert again.status_code == 409
    # A second copy of dana's approval inserted by SQL (a new id) is not attested: ignored.
    assert _copy_approvals(world, request["request_id"], request["request_id"]) == 1
    assert _income(world, "tess", request)["state"] == "masked"
    status = world.client.get(f"/v1/requests/{request['request_id']}", headers=world.auth("tess"))
    assert status.json()["approvers"] == ["dana"] and status.json()["state"] == "pending"


def test_the_requester_cannot_approve_their_own_request(world: AccessWorld) -> None:
    request = world.request("tova")  # tova is an inspector and an approver
    refused = world.decide("tova", request)
    assert refused.status_code == 403 and "own request" in refused.json()["detail"]
    assert world.decide("dana", request).status_code == 201
    # Even a decision row signed with tova's own registered key, inserted by SQL, does not count.
    jws = sign_decision(request["request_id"], request["digest"], "approve", "tova",
                        load_person_key(world.state, "tova"))
    with engine_for(world.url).begin() as conn:
        kid = conn.execute(text("SELECT kid FROM access_approver_keys WHERE subject = 'tova'")).scalar()
        conn.execute(text(
            "INSERT INTO access_approvals (id, request_id, approver, decision, approver_kid, "
            "approver_department, approver_roles, jws, attestation) VALUES (gen_random_uuid(), "
            "CAST(:r AS uuid), 'tova', 'approve', :kid, 'tax-bureau', '[\"data-protection-officer\"]', "
            ":jws, 'forged')"), {"r": request["request_id"], "kid": kid, "jws": jws})
    income = _income(world, "tova", request)
    assert income["state"] == "masked" and income["note"] == "second_person_required"


def test_an_approval_of_another_request_unlocks_nothing(world: AccessWorld) -> None:
    approved = world.request("tess")
    other = world.request("tess")  # same requester, same subject, same fields
    assert world.decide("dana", approved).status_code == 201
    assert world.decide("dora", approved).status_code == 201
    # Posting request A's signed decision to request B is refused...
    wrong = world.decide("dana", approved, target=other["request_id"])
    assert wrong.status_code == 403 and "another request" in wrong.json()["detail"]
    # ...and A's stored, attested approvals copied onto B by SQL are ignored.
    assert _copy_approvals(world, approved["request_id"], other["request_id"]) == 2
    assert _income(world, "tess", approved)["state"] == "clear"
    income = _income(world, "tess", other)
    assert income["state"] == "masked" and income["note"] == "approval_missing"


def test_approval_rows_inserted_by_sql_count_for_nothing(world: AccessWorld) -> None:
    request = world.request("tess")
    with engine_for(world.url).begin() as conn:
        kids = dict(conn.execute(text("SELECT subject, kid FROM access_approver_keys")).all())
        for approver in ("dana", "dora"):
            # Each carries the approver's real signature over this request's digest.
            jws = sign_decision(request["request_id"], request["digest"], "approve", approver,
                                load_person_key(world.state, approver))
            conn.execute(text(
                "INSERT INTO access_approvals (id, request_id, approver, decision, approver_kid, "
                "approver_department, approver_roles, jws, attestation) VALUES (:id, "
                "CAST(:r AS uuid), :a, 'approve', :kid, 'data-protection-office', "
                "'[\"data-protection-officer\"]', :jws, :jws)"),
                {"id": str(uuid.uuid4()), "r": request["request_id"], "a": approver,
                 "kid": kids[approver], "jws": jws})
    income = _income(world, "tess", request)
    assert income["state"] == "masked" and income["note"] == "approval_missing"


def test_an_expired_request_unlocks_nothing(world: AccessWorld) -> None:
    request = world.request("tess", hours=1.0)
    assert world.decide("dana", request).status_code == 201
    assert world.decide("dora", request).status_code == 201
    assert _income(world, "tess", request)["state"] == "clear"
    world.offset[0] = timedelta(hours=2)
    try:
        income = _income(world, "tess", request)
        assert income["state"] == "masked" and income["note"] == "expired"
        late = world.request("tess", hours=1.0)
        world.offset[0] = timedelta(hours=4)
        assert world.decide("dana", late).status_code == 409
    finally:
        world.offset[0] = timedelta(0)


def test_a_recorded_denial_vetoes(world: AccessWorld) -> None:
    request = world.request("tess")
    assert world.decide("dana", request, "deny").json()["state"] == "denied"
    assert world.decide("dora", request).json()["state"] == "denied"
    income = _income(world, "tess", request)
    assert income["state"] == "masked" and income["note"] == "denied"


def test_only_authorised_approvers_with_registered_keys_decide(world: AccessWorld) -> None:
    request = world.request("tess")
    assert world.decide("sam", request).status_code == 403  # not an approver role
    unregistered = world.post("dana", f"/v1/requests/{request['request_id']}/decisions",
                              {"jws": sign_decision(request["request_id"], request["digest"],
                                                    "approve", "dana",
                                                    load_person_key(world.state, "sam"))})
    assert unregistered.status_code == 403 and "registered" in unregistered.json()["detail"]
    assert world.client.get(f"/v1/requests/{request['request_id']}",
                            headers=world.auth("sam")).status_code == 404


def test_a_person_registers_one_approval_key(world: AccessWorld) -> None:
    from joserfc.jwk import OKPKey

    mine = load_person_key(world.state, "dana").as_dict(private=False)
    again = world.client.put("/v1/me/approval-key", headers=world.auth("dana"), json={"jwk": mine})
    assert again.status_code == 200  # the same key: idempotent
    stolen = world.client.put("/v1/me/approval-key", headers=world.auth("dana"),
                              json={"jwk": OKPKey.generate_key("Ed25519").as_dict(private=False)})
    assert stolen.status_code == 409
    theirs = world.client.put("/v1/me/approval-key", headers=world.auth("sam"), json={"jwk": mine})
    assert theirs.status_code == 409  # dana's key cannot become sam's
    private = world.client.put("/v1/me/approval-key", headers=world.auth("nora"),
                               json={"jwk": OKPKey.generate_key("Ed25519").as_dict(private=True)})
    assert private.status_code == 400
