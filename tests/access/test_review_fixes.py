"""Security review findings on the access service, each reproduced against the real service.

1. An approver approved a subject they never saw: the request showed the requester's purpose
   (which named person A) while binding person B by blind index. Approvers now name the subject
   and the service checks it (rate-limited, audited).
2. Refused probes stayed out of the audit log: a NUL in ``role``/``typ``/``source``/
   ``request_id`` made the refusal record unwritable, and refused decisions, request creations
   and key registrations were never audited.
3. "One approval key per person" was a check-then-insert race.
4. The issuer's JWKS was accepted over plain http (tests/access/test_jwks_https.py).
"""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from joserfc.jwk import OKPKey
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from access.errors import Forbidden, RateLimited
from access.identity import Identity
from access.issuer import add_person, mint_token
from access.ratelimit import SlidingWindowLimit
from access.views import ReadQuery
from audit.queries import find_records
from config.settings import Settings
from schemas.audit import AuditRecord
from schemas.catalog import DOCUMENT_V1
from storage import access_requests, migrate
from storage.db import engine_for
from tests.access.conftest import AccessWorld
from tests.support.databases import scratch_database


def _identity(world: AccessWorld, who: str) -> Identity:
    return world.client.app.state.verifier.verify(world.token(who))


def _rejected(world: AccessWorld, action: str, **detail: Any) -> list[AuditRecord]:
    return [r for r in find_records(world.url, action=action, limit=100_000)
            if r.outcome == "rejected" and all(r.detail.get(k) == v for k, v in detail.items())]


def _audit_count(world: AccessWorld) -> int:
    with engine_for(world.url).connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM audit_log")).scalar_one())


# -- 1. approvers name the subject ---------------------------------------------------------------


def test_an_approver_must_name_the_subject_the_request_is_bound_to(world: AccessWorld) -> None:
    """The reproduced attack: A's id in the purpose, B bound; approvals naming A are refused."""
    person_a, person_b = world.population[0].national_id, world.population[1].national_id
    made = world.post("tess", "/v1/requests", {
        "purpose": f"declared income of {person_a}, case 77", "typ": DOCUMENT_V1,
        "subject": person_b, "fields": ["income", "tax_paid"]})
    assert made.status_code == 201, made.text
    request = made.json()
    world.subjects[request["request_id"]] = person_b
    for approver in ("dana", "dora"):
        wrong = world.decide(approver, request, person=person_a)
        assert wrong.status_code == 403, wrong.text
        assert "not the subject of this request" in wrong.json()["detail"]
    unnamed = world.post("dana", f"/v1/requests/{request['request_id']}/decisions",
                         {"jws": world.signed("dana", request)})
    assert unnamed.status_code == 403 and "name the request's subject" in unnamed.json()["detail"]
    status = world.client.get(f"/v1/requests/{request['request_id']}", headers=world.auth("tess"))
    assert status.json()["approvers"] == [] and status.json()["state"] == "pending"
    read = world.read("tess", request_id=request["request_id"])
    assert read.status_code == 200, read.text
    assert all(f["state"] != "clear" for r in read.json()["records"] for f in r["fields"]
               if f["name"] in ("income", "tax_paid"))
    # Each refusal is in the audit log, naming no identifier.
    refused = [r for r in find_records(world.url, correlation_ids=[request["request_id"]])
               if r.outcome == "rejected"]
    assert [(r.action, r.reason) for r in refused] == [("access.approved", "forbidden")] * 3
    recorded = json.dumps([r.model_dump(mode="json") for r in refused])
    assert person_a not in recorded and person_b not in recorded
    # Naming the request's real subject (in any spelling the blind index normalizes) works.
    spaced = " ".join(person_b[i:i + 4] for i in range(0, len(person_b), 4))
    assert world.decide("dana", request, person=spaced).status_code == 201
    done = world.decide("dora", request)
    assert done.status_code == 201 and done.json()["state"] == "approved"
    approvals = find_records(world.url, correlation_ids=[request["request_id"]],
                             action="access.approved")
    assert [r.detail.get("subject_checked") for r in approvals if r.outcome == "ok"] == [True, True]


def test_a_denial_may_name_the_subject_and_a_wrong_one_is_refused(world: AccessWorld) -> None:
    request = world.request("tess", person=2)
    wrong = world.decide("dana", request, "deny", person=world.population[0].national_id)
    assert wrong.status_code == 403
    assert _rejected(world, "access.denied", request_id=request["request_id"])
    unnamed = world.post("dana", f"/v1/requests/{request['request_id']}/decisions",
                         {"jws": world.signed("dana", request, "deny")})
    assert unnamed.status_code == 201 and unnamed.json()["state"] == "denied"  # a veto needs no name


def test_subject_checks_are_rate_limited_per_approver(world: AccessWorld) -> None:
    request = world.request("tess", person=1)
    dana = _identity(world, "dana")
    guess = world.population[0].national_id
    saved = world.service._limit
    world.service._limit = SlidingWindowLimit(2)
    try:
        for _ in range(2):
            with pytest.raises(Forbidden):
                world.service.decide(dana, request["request_id"], world.signed("dana", request), guess)
        with pytest.raises(RateLimited):  # the third guess within the minute, right or wrong
            world.service.decide(dana, request["request_id"], world.signed("dana", request),
                                 world.population[1].national_id)
    finally:
        world.service._limit = saved
    assert _rejected(world, "access.approved", request_id=request["request_id"])[-1].reason == \
        "ratelimited"


# -- 2. every refusal is audited; nothing a caller sends can keep it out ---------------------------


NUL = "x\x00y"


def test_a_nul_in_any_string_field_is_refused_at_the_door(world: AccessWorld) -> None:
    request = world.request("tess")
    decisions = f"/v1/requests/{request['request_id']}/decisions"
    calls: list[tuple[str, str, dict[str, Any]]] = []
    for name in ("purpose", "role", "typ", "source", "request_id", "subject"):
        calls.append(("tess", "/v1/reads", {"purpose": "p", name: NUL}))
    calls.append(("tess", "/v1/reads", {"purpose": "p", "role": "tax-inspector\n"}))  # one line
    good = {"purpose": "p", "typ": DOCUMENT_V1, "subject": world.population[0].national_id,
            "fields": ["income"]}
    for name, value in (("purpose", NUL), ("typ", NUL), ("subject", NUL), ("fields", [NUL]),
                        ("role", NUL)):
        calls.append(("tess", "/v1/requests", {**good, name: value}))
    jws = world.signed("dana", request)
    calls.append(("dana", decisions, {"jws": jws[:10] + NUL + jws[10:],
                                      "subject": world.population[0].national_id}))
    calls.append(("dana", decisions, {"jws": jws, "subject": NUL}))
    jwk = OKPKey.generate_key("Ed25519").as_dict(private=False)
    calls.append(("nora", "/v1/me/approval-key", {"jwk": {**jwk, "kid": NUL}}))
    before = _audit_count(world)
    for who, path, body in calls:
        method = world.client.put if path.endswith("approval-key") else world.client.post
        response = method(path, json=body, headers=world.auth(who))
        assert response.status_code == 422, (path, body, response.text)
        assert "\x00" not in response.text and "\\u0000" not in response.text
    breaks = world.client.get("/v1/recon/breaks", params={"purpose": "p", "role": NUL},
                              headers=world.auth("tess"))
    assert breaks.status_code == 422, breaks.text  # the same door for a query's role
    assert _audit_count(world) == before  # refused before anything, including the audit


def test_a_refusal_record_is_written_whatever_the_query_holds(world: AccessWorld) -> None:
    """The service itself (not only the HTTP layer) escapes what it cannot store."""
    marker = f"probe {uuid.uuid4().hex}"
    query = ReadQuery(purpose=f"{marker}\x00", role="tax\x00inspector", typ="t\x00",
                      source="s\x00" * 400, request_id=None)
    with pytest.raises(Forbidden):
        world.service.read(_identity(world, "tess"), query)
    (record,) = _rejected(world, "fields.read", purpose=f"{marker}\\u0000")
    assert record.reason == "forbidden" and record.detail["role"] == "tax\\u0000inspector"
    assert len(record.detail["filters"]["source"]) <= 500


def test_a_refused_self_approval_is_audited(world: AccessWorld) -> None:
    request = world.request("tova")
    refused = world.decide("tova", request)
    assert refused.status_code == 403
    (record,) = _rejected(world, "access.approved", request_id=request["request_id"])
    assert record.reason == "forbidden" and record.actor == "person:tova"
    assert "own request" in record.detail["refused"]


def test_a_refused_request_creation_is_audited(world: AccessWorld) -> None:
    purpose = f"fishing {uuid.uuid4().hex}"
    refused = world.post("tess", "/v1/requests", {
        "purpose": purpose, "typ": DOCUMENT_V1, "subject": world.population[0].national_id,
        "fields": ["subject_id"]})  # not a tax inspector's field
    assert refused.status_code == 403
    (record,) = _rejected(world, "access.requested", purpose=purpose)
    assert record.reason == "forbidden" and record.actor == "person:tess"
    assert world.population[0].national_id not in json.dumps(record.model_dump(mode="json"))


def test_a_refused_key_registration_is_audited(world: AccessWorld) -> None:
    other = OKPKey.generate_key("Ed25519")
    refused = world.client.put("/v1/me/approval-key", headers=world.auth("dana"),
                               json={"jwk": other.as_dict(private=False)})
    assert refused.status_code == 409
    (record,) = _rejected(world, "access.key_registered", kid=other.thumbprint())
    assert record.reason == "conflict" and record.actor == "person:dana"


# -- 3. one approval key per person, even under concurrency ---------------------------------------


def test_concurrent_key_registrations_store_exactly_one_key(
    world: AccessWorld, served: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    who, racers = f"rae{uuid.uuid4().hex[:6]}", 6
    add_person(world.state, who, "data-protection-office", ["data-protection-officer"])
    # Hold every registration between its "has this person a key?" check and its insert until
    # all have checked: the window the review hit by luck, opened on purpose.
    barrier, passed = threading.Barrier(racers, timeout=20), threading.Event()
    looked_up = access_requests.approver_keys

    def approver_keys(url: str, kids: Any = None, subject: str | None = None) -> Any:
        found = looked_up(url, kids, subject)
        if subject == who and not passed.is_set():
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                pass
            passed.set()
        return found

    monkeypatch.setattr(access_requests, "approver_keys", approver_keys)
    token = mint_token(world.state, who, audience=world.settings.oidc_audience,
                       issuer=world.settings.oidc_issuer, ttl_s=300)

    def register(_: int) -> int:
        jwk = OKPKey.generate_key("Ed25519").as_dict(private=False)
        with httpx.Client(base_url=served, timeout=60) as http:
            return http.put("/v1/me/approval-key", json={"jwk": jwk},
                            headers={"Authorization": f"Bearer {token}"}).status_code

    with ThreadPoolExecutor(racers) as pool:
        codes = sorted(pool.map(register, range(racers)))
    assert codes == [200] + [409] * (racers - 1)
    with engine_for(world.url).connect() as conn:
        stored = conn.execute(text("SELECT count(*) FROM access_approver_keys WHERE subject = :s"),
                              {"s": who}).scalar_one()
    assert stored == 1


def test_the_database_refuses_a_second_key_for_a_person(world: AccessWorld) -> None:
    jwk = OKPKey.generate_key("Ed25519").as_dict(private=False)
    with pytest.raises(IntegrityError), engine_for(world.url).begin() as conn:
        conn.execute(text(
            "INSERT INTO access_approver_keys (kid, subject, jwk, attestation) "
            "VALUES (:kid, 'dana', CAST(:jwk AS jsonb), 'forged')"),
            {"kid": OKPKey.import_key(jwk).thumbprint(), "jwk": json.dumps(jwk)})


def test_the_migration_refuses_existing_duplicates_with_a_clear_message(
    stack_settings: Settings,
) -> None:
    with scratch_database(stack_settings.database_url, "attest_keys_dup",
                          revision="0012_recon_fields") as url:
        with engine_for(url).begin() as conn:
            for kid in ("k-old", "k-new"):
                conn.execute(text(
                    "INSERT INTO access_approver_keys (kid, subject, jwk, attestation) "
                    "VALUES (:kid, 'dana', '{}'::jsonb, 'a')"), {"kid": kid})
        with pytest.raises(Exception, match=r"dana \(2 keys\)"):  # noqa: PT011 - alembic wraps it
            migrate.upgrade(url)
        assert migrate.current_revision(url) == "0012_recon_fields"  # nothing changed
        with engine_for(url).begin() as conn:
            conn.execute(text("DELETE FROM access_approver_keys WHERE kid = 'k-new'"))
        migrate.upgrade(url)
        assert migrate.current_revision(url) == migrate.head_revision(url)
