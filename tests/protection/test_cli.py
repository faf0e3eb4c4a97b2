"""`attest keys init / rotate-kek`, `attest query`, `attest forget` against the real stack.

Audit records go to the real embedded broker and are read back from the audit topic.
"""

from __future__ import annotations

import getpass
import json
import stat
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from sqlalchemy import text
from typer.testing import CliRunner

from cli import crypto_keys, forget, query
from config.settings import Settings
from scenarios.government import TAX_BUREAU, approval_payload, document_payloads, people
from schemas.audit import AuditRecord
from schemas.catalog import APPROVAL_V1, DOCUMENT_V1
from security.field_protection import writer_protector
from security.keyring import StaticKeyring, keyring_path, load_keyring_file, write_keyring_file
from security.tiers import Tier
from storage.db import engine_for
from storage.events import store_events
from streams.admin import ensure_topics
from streams.errors import BrokerUnavailable
from streams.topics import AUDIT
from tests.helpers import read_topic, scratch_database
from tests.protection.conftest import stored

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


@pytest.fixture(scope="module")
def world(app: typer.Typer, settings: Settings) -> dict[str, Any]:
    """A keyring made by `init`, two people's documents at both agencies, and approvals."""
    result = RUNNER.invoke(app, ["init"])
    assert result.exit_code == 0, result.output
    protector = writer_protector(settings.state_dir, {})
    population = people(2, seed=uuid.uuid4().int)
    docs = document_payloads(4, seed=uuid.uuid4().int, population=population)
    store_events(settings.database_url, stored(docs, DOCUMENT_V1), protector=protector)
    tag = uuid.uuid4().hex[:8]
    requests = {"second-person": f"REQ-{tag}-A", "self": f"REQ-{tag}-S", "level-2": f"REQ-{tag}-2"}
    approvals = [
        approval_payload(requests["second-person"], "kim", 3, seed=uuid.uuid4().int),
        approval_payload(requests["self"], getpass.getuser(), 3, seed=uuid.uuid4().int),
        approval_payload(requests["level-2"], getpass.getuser(), 2, seed=uuid.uuid4().int),
    ]
    store_events(settings.database_url, stored(approvals, APPROVAL_V1), protector=protector)
    return {"people": population, "docs": docs, "requests": requests}


def _audit(settings: Settings, correlation: str | None = None, action: str | None = None
           ) -> list[AuditRecord]:
    records = [AuditRecord.from_bytes(m.value())
               for m in read_topic(settings, AUDIT.name(settings), idle_s=2.0)]
    return [r for r in records if (correlation is None or r.correlation_id == correlation)
            and (action is None or r.action == action)]


def _query(app: typer.Typer, *args: str) -> tuple[int, str, list[dict[str, Any]]]:
    result = RUNNER.invoke(app, ["query", *args, "--json"])
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result.exit_code, _flat(result.output), lines


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
        code, output, lines = _query(app, "--as", "tax-inspector", "--subject", subject, *purpose)
        assert code != 0 and "purpose" in output and not lines


def test_without_approval_level_3_fields_are_masked(app: typer.Typer, world: dict[str, Any]) -> None:
    doc = _tax_doc(world)
    code, output, lines = _query(app, "--as", "tax-inspector", "--purpose", "yearly review",
                                 "--subject", world["people"][0].national_id)
    assert code == 0, output
    assert [line["event_id"] for line in lines] == [doc["event_id"]]
    # Masked fields are listed whether or not the record has them: without reading a column
    # the reader cannot know, and must not learn, which ones are present.
    assert lines[0]["masked"] == {"income": "approval_missing", "tax_paid": "approval_missing",
                                  "subject_id": "not_granted", "document_id": "not_granted",
                                  "title": "not_granted", "body": "not_granted",
                                  "insurance_status": "not_granted"}
    assert doc["income"] not in output


def test_a_second_persons_approval_reveals_and_the_read_is_audited(
    app: typer.Typer, settings: Settings, world: dict[str, Any]
) -> None:
    doc = _tax_doc(world)
    purpose = f"case {uuid.uuid4().hex[:6]}: declared income against contributions"
    code, output, lines = _query(app, "--as", "tax-inspector", "--purpose", purpose, "--subject",
                                 world["people"][0].national_id, "--request",
                                 world["requests"]["second-person"])
    assert code == 0, output
    (line,) = lines
    assert line["fields"]["income"] == doc["income"]
    assert line["fields"]["tax_paid"] == doc["tax_paid"]
    assert "subject_id" in line["masked"] and line["fields"]["agency"] == TAX_BUREAU
    reads = [r for r in _audit(settings, action="fields.read") if r.detail["purpose"] == purpose]
    (record,) = reads
    assert record.actor.startswith(f"operator:{getpass.getuser()}@")
    assert record.detail["role"] == "tax-inspector"
    assert record.detail["reader"] == getpass.getuser()
    assert record.detail["fields"] == ["attest.document.v1.income", "attest.document.v1.tax_paid"]
    assert record.subject_ids == [doc["event_id"]]
    assert record.detail["request_id"] == world["requests"]["second-person"]
    assert len(record.detail["approvals"]) == 1
    assert world["people"][0].national_id not in record.to_bytes().decode()


def test_approving_your_own_level_3_read_is_not_enough(app: typer.Typer,
                                                       world: dict[str, Any]) -> None:
    code, output, lines = _query(app, "--as", "tax-inspector", "--purpose", "self-approved",
                                 "--subject", world["people"][0].national_id,
                                 "--request", world["requests"]["self"])
    assert code == 0, output
    assert lines[0]["masked"]["income"] == "second_person_required"


def test_the_social_security_officer_reads_its_fields_with_level_2(
    app: typer.Typer, world: dict[str, Any]
) -> None:
    person = world["people"][1]
    code, output, lines = _query(app, "--as", "social-security-officer", "--purpose", "benefit claim",
                                 "--subject", person.national_id,
                                 "--request", world["requests"]["level-2"])
    assert code == 0, output
    (line,) = lines  # only the bureau's own contribution record (row-level security)
    assert line["fields"]["insurance_status"] == person.insurance_status
    assert line["fields"]["subject_id"].replace(" ", "") == person.national_id
    assert "income" in line["masked"] and "body" in line["masked"]


def test_no_audit_no_read(app: typer.Typer, world: dict[str, Any],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    def down(settings: Settings, records: list[AuditRecord]) -> None:
        raise BrokerUnavailable("cannot reach Kafka")

    monkeypatch.setattr(query, "publish_audit", down)
    doc = _tax_doc(world)
    code, output, lines = _query(app, "--as", "tax-inspector", "--purpose", "audit down",
                                 "--subject", world["people"][0].national_id,
                                 "--request", world["requests"]["second-person"])
    assert code != 0 and "audit record could not be sent" in output
    assert not lines and doc["income"] not in output


def test_a_tampered_field_fails_the_read_loudly(app: typer.Typer, settings: Settings,
                                                world: dict[str, Any]) -> None:
    protector = writer_protector(settings.state_dir, {})
    person = people(1, seed=uuid.uuid4().int)[0]
    victim, other = document_payloads(3, seed=uuid.uuid4().int, population=[person])[::2]
    store_events(settings.database_url, stored([victim, other], DOCUMENT_V1), protector=protector)
    with engine_for(settings.database_url).begin() as conn:
        conn.execute(text("UPDATE document_fields SET income = (SELECT income FROM document_fields "
                          "WHERE event_id = CAST(:o AS uuid)) WHERE event_id = CAST(:v AS uuid)"),
                     {"o": other["event_id"], "v": victim["event_id"]})
    code, output, _ = _query(app, "--as", "tax-inspector", "--purpose", "check",
                             "--event-id", victim["event_id"],
                             "--request", world["requests"]["second-person"])
    assert code != 0 and "failed authentication" in output


def test_rotating_a_kek_rewraps_keys_and_leaves_fields_alone(
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
    assert set(versions_after) == set(versions_before)
    assert set(versions_after.values()) == {new_version}
    assert f"re-wrapped {len(versions_before)} wrapping keys" in _flat(result.output)

    # Drop every older restricted key from the keyring: the re-wrapped keys still open.
    path = keyring_path(settings.state_dir)
    full = load_keyring_file(path)
    newest_only = StaticKeyring({**full.tiers, Tier.RESTRICTED: full.tiers[Tier.RESTRICTED][-1:]},
                                full.index_keys, full.origin)
    write_keyring_file(newest_only, path, replace=True)
    code, output, lines = _query(app, "--as", "tax-inspector", "--purpose", "after rotation",
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
    result = RUNNER.invoke(app, ["forget", "--subject", person.national_id,
                                 "--reason", "erasure request 7", "--yes"])
    assert result.exit_code == 0, result.output
    assert "destroyed" in result.output
    code, output, lines = _query(app, "--as", "tax-inspector", "--purpose", "after erasure",
                                 "--event-id", doc["event_id"],
                                 "--request", world["requests"]["second-person"])
    assert code == 0, output
    assert lines[0]["forgotten"] == ["income", "tax_paid"]
    plain = RUNNER.invoke(app, ["query", "--as", "tax-inspector", "--purpose", "after erasure",
                                "--event-id", doc["event_id"], "--request",
                                world["requests"]["second-person"]])
    assert "forgotten subject" in _flat(plain.output)
    assert "cannot be recovered" in _flat(plain.output)
    # The subject no longer joins: a lookup by its national id finds nothing.
    _, _, by_subject = _query(app, "--as", "tax-inspector", "--purpose", "lookup",
                              "--subject", person.national_id)
    assert by_subject == []
    (record,) = [r for r in _audit(settings, action="subject.forgotten")
                 if r.detail["reason"] == "erasure request 7"]
    assert doc["event_id"] in record.subject_ids and record.detail["data_keys_destroyed"] >= 2
    assert person.national_id not in record.to_bytes().decode()

