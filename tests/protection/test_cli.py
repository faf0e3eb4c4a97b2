"""`attest keys init / rotate-kek`, `attest query`, `attest forget` against the real stack.

`attest query` is a client of the access service (issue 11): each call here talks to a service
built fresh from the module's state folder (so a rotated keyring is picked up), through
FastAPI's TestClient. Reads are audited in the audit log; keys and forgetting still send their
records to the real embedded broker, read back from the audit topic.
"""

from __future__ import annotations

import json
import stat
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from fastapi.testclient import TestClient
from sqlalchemy import text
from typer.testing import CliRunner

from access.app import create_app, service_from_settings
from access.approvals import sign_decision
from access.client import AccessClient, read_token
from access.issuer import add_person, load_person_key, mint_token
from access.service import AccessService
from audit.queries import find_records
from cli import crypto_keys, forget, query
from config.settings import Settings
from protection.fields import writer_protector
from protection.keyring import StaticKeyring
from protection.keyring_sources import keyring_path, load_keyring_file, write_keyring_file
from protection.tiers import Tier
from scenarios.finance import transaction_payloads
from scenarios.government import TAX_BUREAU, document_payloads, people
from schemas.audit import AuditRecord, records_in
from schemas.catalog import DOCUMENT_V1, TRANSACTION_V1
from storage.db import engine_for
from storage.events import store_events
from streams.admin import ensure_topics
from streams.topics import AUDIT
from tests.support.databases import scratch_database
from tests.support.events import stored_events
from tests.support.topics import read_topic

pytestmark = pytest.mark.integration
RUNNER = CliRunner()


@pytest.fixture(scope="module")
def settings(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The stack's settings with a state folder (its keyring) and a database of this module's own.

    Its own database: `rotate-kek` re-wraps every wrapping key it finds, and the session
    database also holds keys sealed to the workers' keyring.
    """
    with scratch_database(stack_settings.database_url, "attest_cli") as url:
        own = stack_settings.model_copy(update={
            "state_dir": tmp_path_factory.mktemp("cli-state"), "database_url": url})
        ensure_topics(own)
        with pytest.MonkeyPatch.context() as patch:
            for module in (crypto_keys, query, forget):
                patch.setattr(module, "get_settings", lambda: own)
            yield own


@pytest.fixture(scope="module")
def app(settings: Settings) -> typer.Typer:
    cli = typer.Typer()
    cli.command("init")(crypto_keys.init)
    cli.command("rotate-kek")(crypto_keys.rotate_kek)
    cli.command("query")(query.query)
    cli.command("forget")(forget.forget)
    return cli


PEOPLE = {"tess": ("tax-bureau", ["tax-inspector"]),
          "tova": ("tax-bureau", ["tax-inspector", "data-protection-officer"]),
          "sam": ("social-security-bureau", ["social-security-officer"]),
          "dana": ("data-protection-office", ["data-protection-officer"]),
          "dora": ("data-protection-office", ["data-protection-officer"]),
          "pat": ("treasury", ["payments-analyst"])}


def _service(settings: Settings, **overrides: Any) -> TestClient:
    """The access service as `attest serve` builds it from the state folder, in-process."""
    service, verifier = service_from_settings(settings)
    if overrides:
        service = AccessService(database_url=settings.database_url, policies=service._policies,
                                keyring=service._keyring, attestor=service._attestor, **overrides)
    return TestClient(create_app(service, verifier))


@pytest.fixture(autouse=True)
def fresh_service(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """`attest query` talks to a service started for this call (it reads the keyring at start)."""
    monkeypatch.setattr(query, "client", lambda token_file: AccessClient(
        "http://testserver", read_token(token_file), http=_service(settings)))


def _decide(settings: Settings, who: str, request: dict[str, Any], http: TestClient,
            subject: str) -> int:
    """``who`` approves ``request``, naming its person (``subject``) as an approver must."""
    key = load_person_key(settings.state_dir, who)
    headers = {"Authorization": f"Bearer {_token(settings, who)}"}
    http.put("/v1/me/approval-key", headers=headers, json={"jwk": key.as_dict(private=False)})
    jws = sign_decision(request["request_id"], request["digest"], "approve", who, key)
    return http.post(f"/v1/requests/{request['request_id']}/decisions", headers=headers,
                     json={"jws": jws, "subject": subject}).status_code


def _token(settings: Settings, who: str) -> str:
    return mint_token(settings.state_dir, who, audience=settings.oidc_audience,
                      issuer=settings.oidc_issuer)


@pytest.fixture(scope="module")
def world(app: typer.Typer, settings: Settings) -> dict[str, Any]:
    """Keys made by `init`, two people's documents at both agencies, and approved requests."""
    result = RUNNER.invoke(app, ["init"])
    assert result.exit_code == 0, result.output
    for who, (department, roles) in PEOPLE.items():
        add_person(settings.state_dir, who, department, roles)
    tokens = {}
    for who in PEOPLE:
        path = settings.state_dir / f"{who}.token"
        path.write_text(_token(settings, who))
        tokens[who] = str(path)
    protector = writer_protector(settings.state_dir, {})
    population = people(2, seed=uuid.uuid4().int)
    docs = document_payloads(4, seed=uuid.uuid4().int, population=population)
    store_events(settings.database_url, stored_events(docs, DOCUMENT_V1), protector=protector)
    http = _service(settings)

    def ask(who: str, person: int, fields: list[str]) -> dict[str, Any]:
        response = http.post("/v1/requests", headers={"Authorization": f"Bearer {_token(settings, who)}"},
                             json={"purpose": "case", "typ": DOCUMENT_V1, "fields": fields,
                                   "subject": population[person].national_id})
        assert response.status_code == 201, response.text
        return response.json()

    first, other = population[0].national_id, population[1].national_id
    second = ask("tess", 0, ["income", "tax_paid"])
    assert _decide(settings, "dana", second, http, first) == 201
    assert _decide(settings, "dora", second, http, first) == 201
    own = ask("tova", 0, ["income", "tax_paid"])
    assert _decide(settings, "tova", own, http, first) == 403  # a requester never approves
    assert _decide(settings, "dana", own, http, first) == 201
    level_2 = ask("sam", 1, ["subject_id", "insurance_status"])
    assert _decide(settings, "dana", level_2, http, other) == 201
    requests = {"second-person": second["request_id"], "self": own["request_id"],
                "level-2": level_2["request_id"]}
    return {"people": population, "docs": docs, "requests": requests, "tokens": tokens}


def _audit(settings: Settings, correlation: str | None = None, action: str | None = None
           ) -> list[AuditRecord]:
    records = [r for m in read_topic(settings, AUDIT.name(settings), idle_s=2.0)
               for r in records_in(m.value())]
    return [r for r in records if (correlation is None or r.correlation_id == correlation)
            and (action is None or r.action == action)]


def _query(app: typer.Typer, *args: str) -> tuple[int, str, list[dict[str, Any]]]:
    result = RUNNER.invoke(app, ["query", *args, "--json"])
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result.exit_code, _flat(result.output), lines


def _reads(settings: Settings) -> list[AuditRecord]:
    """``fields.read`` records, from the audit log the service commits them to."""
    return find_records(settings.database_url, action="fields.read")


def _approved_request(settings: Settings, national_id: str) -> str:
    """A level-3 request by tess for ``national_id``'s income, approved by dana and dora."""
    http = _service(settings)
    response = http.post("/v1/requests", headers={"Authorization": f"Bearer {_token(settings, 'tess')}"},
                         json={"purpose": "case", "typ": DOCUMENT_V1, "subject": national_id,
                               "fields": ["income", "tax_paid"]})
    assert response.status_code == 201, response.text
    request = response.json()
    assert _decide(settings, "dana", request, http, national_id) == 201
    assert _decide(settings, "dora", request, http, national_id) == 201
    return request["request_id"]


def _flat(output: str) -> str:
    """Output with Rich's line wrapping undone."""
    return " ".join(output.split())


def _tax_doc(world: dict[str, Any], person: int = 0) -> dict[str, Any]:
    nid = world["people"][person].national_id
    return next(d for d in world["docs"] if d["agency"] == TAX_BUREAU
                and d["subject_id"].replace("-", "") == nid)


def test_init_makes_a_private_keyring_and_prints_no_key(app: typer.Typer, settings: Settings,
                                                        world: dict[str, Any]) -> None:
    path = keyring_path(settings.state_dir)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = RUNNER.invoke(app, ["init"])
    assert again.exit_code == 0 and "checked keyring" in _flat(again.output)
    secrets = [value for tier in json.loads(path.read_text())["tiers"].values()
               for version in tier for key, value in version.items() if key == "private"]
    secrets += list(json.loads(path.read_text())["blind_index"].values())
    assert secrets and not any(secret in again.output for secret in secrets)


def test_a_read_without_a_purpose_is_refused(app: typer.Typer, world: dict[str, Any]) -> None:
    subject = world["people"][0].national_id
    for purpose in ([], ["--purpose", "   "]):
        code, output, lines = _query(app, "-t", world["tokens"]["tess"], "--subject", subject,
                                     *purpose)
        assert code != 0 and "purpose" in output and not lines


def test_without_approval_level_3_fields_are_masked(app: typer.Typer, world: dict[str, Any]) -> None:
    doc = _tax_doc(world)
    code, output, lines = _query(app, "-t", world["tokens"]["tess"], "--purpose", "yearly review",
                                 "--subject", world["people"][0].national_id)
    assert code == 0, output
    assert [line["event_id"] for line in lines] == [doc["event_id"]]
    # Masked fields are listed whether or not the record has them: without reading a column
    # the reader cannot know, and must not learn, which ones are present.
    assert lines[0]["masked"] == {"income": "approval_missing", "tax_paid": "approval_missing",
                                  "subject_id": "not_granted", "document_id": "not_granted",
                                  "title": "not_granted", "body": "not_granted",
                                  "insurance_status": "not_granted", "contribution_base": "not_granted"}
    assert doc["income"] not in output


def test_a_second_persons_approval_reveals_and_the_read_is_audited(
    app: typer.Typer, settings: Settings, world: dict[str, Any]
) -> None:
    doc = _tax_doc(world)
    purpose = f"case {uuid.uuid4().hex[:6]}: declared income against contributions"
    code, output, lines = _query(app, "-t", world["tokens"]["tess"], "--purpose", purpose,
                                 "--request", world["requests"]["second-person"])
    assert code == 0, output
    (line,) = lines
    assert line["fields"]["income"] == doc["income"]
    assert line["fields"]["tax_paid"] == doc["tax_paid"]
    assert "subject_id" in line["masked"] and line["fields"]["agency"] == TAX_BUREAU
    reads = [r for r in _reads(settings) if r.detail["purpose"] == purpose]
    (record,) = reads
    assert record.actor == "person:tess"
    assert record.detail["role"] == "tax-inspector"
    assert record.detail["reader"] == "tess"
    assert record.detail["fields"] == ["attest.document.v1.income", "attest.document.v1.tax_paid"]
    assert record.subject_ids == [doc["event_id"]]
    assert record.detail["request_id"] == world["requests"]["second-person"]
    assert len(record.detail["approvals"]) == 2  # level 3: two distinct approvers
    assert world["people"][0].national_id not in record.to_bytes().decode()


def test_approving_your_own_level_3_read_is_not_enough(app: typer.Typer,
                                                       world: dict[str, Any]) -> None:
    code, output, lines = _query(app, "-t", world["tokens"]["tova"], "--purpose", "self-approved",
                                 "--request", world["requests"]["self"])
    assert code == 0, output
    assert lines[0]["masked"]["income"] == "second_person_required"


def test_the_social_security_officer_reads_its_fields_with_level_2(
    app: typer.Typer, world: dict[str, Any]
) -> None:
    person = world["people"][1]
    code, output, lines = _query(app, "-t", world["tokens"]["sam"], "--purpose", "benefit claim",
                                 "--request", world["requests"]["level-2"])
    assert code == 0, output
    (line,) = lines  # only the bureau's own contribution record (row-level security)
    assert line["fields"]["insurance_status"] == person.insurance_status
    assert line["fields"]["subject_id"].replace(" ", "") == person.national_id
    assert "income" in line["masked"] and "body" in line["masked"]


def test_no_audit_no_read(app: typer.Typer, settings: Settings, world: dict[str, Any],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    def down(url: str, records: list[AuditRecord]) -> int:
        raise RuntimeError("cannot reach the audit log")

    monkeypatch.setattr(query, "client", lambda token_file: AccessClient(
        "http://testserver", read_token(token_file), http=_service(settings, append_audit=down)))
    doc = _tax_doc(world)
    code, output, lines = _query(app, "-t", world["tokens"]["tess"], "--purpose", "audit down",
                                 "--request", world["requests"]["second-person"])
    assert code != 0 and "audit record could not be committed" in output
    assert not lines and doc["income"] not in output


def test_a_tampered_field_fails_the_read_loudly(app: typer.Typer, settings: Settings,
                                                world: dict[str, Any]) -> None:
    protector = writer_protector(settings.state_dir, {})
    person = people(1, seed=uuid.uuid4().int)[0]
    victim, other = document_payloads(3, seed=uuid.uuid4().int, population=[person])[::2]
    store_events(settings.database_url, stored_events([victim, other], DOCUMENT_V1), protector=protector)
    with engine_for(settings.database_url).begin() as conn:
        conn.execute(text("UPDATE document_fields SET income = (SELECT income FROM document_fields "
                          "WHERE event_id = CAST(:o AS uuid)) WHERE event_id = CAST(:v AS uuid)"),
                     {"o": other["event_id"], "v": victim["event_id"]})
    # tampering is found whatever the request: read the victim as the bureau's approved reader
    victim_request = _approved_request(settings, person.national_id)
    code, output, _ = _query(app, "-t", world["tokens"]["tess"], "--purpose", "check",
                             "--event-id", victim["event_id"], "--request", victim_request)
    assert code != 0 and "failed authentication" in output


def test_rotating_a_kek_replaces_wrapping_keys_and_leaves_fields_alone(
    app: typer.Typer, settings: Settings, world: dict[str, Any]
) -> None:
    doc = _tax_doc(world)
    url = settings.database_url

    def snapshot() -> tuple[bytes, dict[str, int]]:
        with engine_for(url).connect() as conn:
            field = bytes(conn.execute(text("SELECT income FROM document_fields WHERE event_id = "
                                            "CAST(:e AS uuid)"), {"e": doc["event_id"]}).scalar_one())
            versions = dict(conn.execute(text("SELECT id::text, kek_version FROM tier_wrapping_keys "
                                              "WHERE tier = 'restricted'")).all())
        return field, versions

    field_before, versions_before = snapshot()
    result = RUNNER.invoke(app, ["rotate-kek", "--tier", "restricted"])
    assert result.exit_code == 0, result.output
    field_after, versions_after = snapshot()
    assert field_after == field_before
    new_version = load_keyring_file(keyring_path(settings.state_dir)).current_version(Tier.RESTRICTED)
    # New wrapping keys (issue 14, item 8): none of the old ones is left, in any form.
    assert versions_after and not set(versions_after) & set(versions_before)
    assert set(versions_after.values()) == {new_version}
    assert f"deleted {len(versions_before)} old wrapping keys" in _flat(result.output)

    # Drop every older restricted key from the keyring: the re-wrapped keys still open.
    path = keyring_path(settings.state_dir)
    full = load_keyring_file(path)
    newest_only = StaticKeyring({**full.tiers, Tier.RESTRICTED: full.tiers[Tier.RESTRICTED][-1:]},
                                full.index_keys, full.origin)
    write_keyring_file(newest_only, path, replace=True)
    code, output, lines = _query(app, "-t", world["tokens"]["tess"], "--purpose", "after rotation",
                                 "--event-id", doc["event_id"],
                                 "--request", world["requests"]["second-person"])
    assert code == 0, output
    assert lines[0]["fields"]["income"] == doc["income"]
    rotations = _audit(settings, action="key.rotated")
    assert any(r.detail["tier"] == "restricted" and r.detail["to_version"] == new_version
               for r in rotations)


def test_forgetting_a_subject_shreds_its_fields_and_says_so(
    app: typer.Typer, settings: Settings, world: dict[str, Any]
) -> None:
    person = world["people"][1]
    doc = next(d for d in world["docs"] if d["agency"] == TAX_BUREAU
               and d["subject_id"].replace("-", "") == person.national_id)
    approved_before = _approved_request(settings, person.national_id)
    result = RUNNER.invoke(app, ["forget", "--subject", person.national_id,
                                 "--reason", "erasure request 7", "--yes"])
    assert result.exit_code == 0, result.output
    assert "destroyed" in result.output
    # The subject no longer joins: neither a lookup by its national id nor a request approved
    # for it before finds anything (a request is bound to its subject's blind index).
    _, _, by_subject = _query(app, "-t", world["tokens"]["tess"], "--purpose", "lookup",
                              "--subject", person.national_id)
    assert by_subject == []
    code, output, by_request = _query(app, "-t", world["tokens"]["tess"], "--purpose", "after erasure",
                                      "--event-id", doc["event_id"], "--request", approved_before)
    assert code == 0 and by_request == [], output
    (record,) = [r for r in _audit(settings, action="subject.forgotten")
                 if r.detail["reason"] == "erasure request 7"]
    # The forget record links none of the person's events (issue 14, item 7).
    assert record.subject_ids == [] and record.detail["records"] >= 1
    assert doc["event_id"] not in record.to_bytes().decode()
    assert record.detail["data_keys_destroyed"] >= 2
    assert person.national_id not in record.to_bytes().decode()

    # A record still found by its id (level-1 fields of a payment) says its fields are forgotten.
    payment = transaction_payloads(1, "core-ledger", seed=uuid.uuid4().int)[0]
    store_events(settings.database_url, stored_events([payment], TRANSACTION_V1),
                 protector=writer_protector(settings.state_dir, {}))
    shred = RUNNER.invoke(app, ["forget", "--subject", payment["account"], "--domain", "account",
                                "--reason", "erasure request 8", "--yes"])
    assert shred.exit_code == 0, shred.output
    code, output, lines = _query(app, "-t", world["tokens"]["pat"], "--purpose", "after erasure",
                                 "--event-id", payment["event_id"])
    assert code == 0, output
    assert lines[0]["forgotten"] == ["reference", "value_date", "direction", "amount",
                                     "counterparty"]
    plain = RUNNER.invoke(app, ["query", "-t", world["tokens"]["pat"], "--purpose", "after erasure",
                                "--event-id", payment["event_id"]])
    assert "forgotten subject" in _flat(plain.output)
    assert "cannot be recovered" in _flat(plain.output)
