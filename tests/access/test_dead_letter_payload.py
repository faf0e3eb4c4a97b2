"""Issue 14, item 3: a dead letter's payload is shown by the access service, to a role with
``dead_letters.payload``, after its ``dlq.payload_shown`` record is committed.

It used to be the client's decision: ``attest dlq show --payload --why`` read the topic itself,
published its own record and printed the payload to whoever ran it. Now the service decides
(authenticated token, policy permission, audit committed first, refusals audited too) and the
CLI only asks. Everything here is real: the embedded broker holds the letters, the embedded
Postgres the audit log, uvicorn serves the app the CLI calls.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer
import uvicorn
from confluent_kafka import Producer
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from access.app import create_app
from access.issuer import add_person
from access.letter_payloads import claimed_parts, dead_letters_of
from access.policy import DEAD_LETTER_PAYLOAD, load_policy, parse_policy
from access.service import AccessService
from audit.queries import find_records
from cli import dlq as dlq_cli
from config.settings import Settings
from devstack.processes import choose_port
from operations.errors import ExitCode
from protection.errors import PolicyError
from protection.tiers import protection_catalog
from scenarios.finance import transaction_payloads
from schemas.audit import AuditAction, records_in
from schemas.catalog import TRANSACTION_V1
from security.keyfiles import generate_key
from storage.db import normalise_url
from streams.admin import ensure_topics
from streams.producer import producer_config, sign_payload
from streams.topics import AUDIT, DEAD_LETTER, TRANSACTIONS
from tests.access.conftest import AccessWorld
from tests.support.topics import read_topic
from tests.support.waiting import wait_for

RUNNER = CliRunner()
PATH = "/v1/dead-letters/payload"
#: a security operator (the only role with the permission) and a field reader without it
SOL, TESS = "sol", "tess"


@dataclass
class Letters:
    settings: Settings  # the world's, with a topic prefix of its own
    client: TestClient
    topic: str
    signed: tuple[int, int]  # a compact JWS carrying an account in clear
    encrypted: tuple[int, int]  # five parts: returned as stored
    payload: dict[str, Any]
    value: bytes
    jwe: bytes

    def ask(self, who: str | None, position: tuple[int, int], purpose: str = "INC-7: why rejected",
            world: AccessWorld | None = None, client: TestClient | None = None) -> Any:
        headers = {"Authorization": f"Bearer {world.token(who)}"} if who and world else {}
        return (client or self.client).post(PATH, headers=headers, json={
            "partition": position[0], "offset": position[1], "purpose": purpose})


#: A producer's Kafka key, often a payment reference: shown only with the payload.
LETTER_KEY = b"PAY-REF-4242"


def _produce(settings: Settings, values: list[bytes], reason: bytes = b"unknown_key"
             ) -> list[tuple[int, int]]:
    landed: list[tuple[int, int]] = []
    producer = Producer(producer_config(settings))
    for i, value in enumerate(values):
        producer.produce(
            DEAD_LETTER.name(settings), value, key=LETTER_KEY, partition=0,
            headers=[("attest-reason", reason), ("attest-detail", b"no such key"),
                     ("attest-source-topic", TRANSACTIONS.name(settings).encode()),
                     ("attest-source-partition", b"0"), ("attest-source-offset", str(i).encode()),
                     ("attest-rejected-at", datetime.now(UTC).isoformat().encode())],
            on_delivery=lambda err, msg: landed.append((msg.partition(), msg.offset())))
    producer.flush(30)
    assert len(landed) == len(values)
    return landed


def _service(world: AccessWorld, settings: Settings, database_url: str | None = None) -> AccessService:
    return AccessService(database_url=database_url or world.url, policies=world.service._policies,
                         keyring=world.service._keyring, attestor=world.service._attestor,
                         dead_letters=dead_letters_of(settings))


@pytest.fixture(scope="module")
def letters(world: AccessWorld) -> Letters:
    add_person(world.state, SOL, "security-operations", ["security-operator"])
    own = world.settings.model_copy(update={"topic_prefix": f"dlqp{uuid.uuid4().hex[:6]}."})
    ensure_topics(own)
    key = generate_key("payload-ledger")
    (payload,) = transaction_payloads(1, key.source)
    value = sign_payload(key, payload, TRANSACTION_V1)
    jwe = b"eyJhbGciOiJFQ0RILUVTIiwiZW5jIjoiQTI1NkdDTSJ9.a2V5.aXY.Y2lwaGVy.dGFn"
    signed, encrypted = _produce(own, [value, jwe])
    client = TestClient(create_app(_service(world, own), world.client.app.state.verifier))
    return Letters(own, client, DEAD_LETTER.name(own), signed, encrypted, payload, value, jwe)


def _records(world: AccessWorld, letters: Letters, position: tuple[int, int]) -> list[Any]:
    return find_records(world.url, action=AuditAction.DLQ_PAYLOAD_SHOWN,
                        correlation_ids=[f"{letters.topic}/{position[0]}@{position[1]}"])


# -- the service ---------------------------------------------------------------------------------


@pytest.mark.integration
def test_a_role_without_the_permission_is_refused_and_the_refusal_is_recorded(
    world: AccessWorld, letters: Letters,
) -> None:
    before = len(_records(world, letters, letters.signed))
    refused = letters.ask(TESS, letters.signed, world=world)
    assert refused.status_code == 403, refused.text
    assert DEAD_LETTER_PAYLOAD in refused.json()["detail"]
    assert letters.payload["account"] not in refused.text
    records = _records(world, letters, letters.signed)[before:]
    (record,) = records
    assert (record.actor, record.outcome, record.reason) == (f"person:{TESS}", "rejected", "forbidden")
    assert record.detail["purpose"] == "INC-7: why rejected"


@pytest.mark.integration
def test_no_token_or_a_forged_one_is_refused(letters: Letters) -> None:
    nobody = letters.client.post(PATH, json={"partition": letters.signed[0],
                                             "offset": letters.signed[1], "purpose": "p"})
    assert nobody.status_code == 401
    forged = letters.client.post(PATH, headers={"Authorization": "Bearer a.b.c"}, json={
        "partition": letters.signed[0], "offset": letters.signed[1], "purpose": "p"})
    assert forged.status_code == 401
    assert letters.payload["account"] not in nobody.text + forged.text


@pytest.mark.integration
def test_with_the_permission_the_payload_comes_back_and_its_record_is_in_the_log(
    world: AccessWorld, letters: Letters,
) -> None:
    shown = letters.ask(SOL, letters.signed, world=world)
    assert shown.status_code == 200, shown.text
    body = shown.json()
    assert body["payload"]["account"] == letters.payload["account"]
    assert base64.b64decode(body["value"]) == letters.value and body["form"] == "jws"
    assert body["sha256"] == hashlib.sha256(letters.value).hexdigest()
    assert body["reason"] == "unknown_key" and body["headers"]["attest-detail"] == "no such key"
    (record,) = [r for r in _records(world, letters, letters.signed) if r.outcome == "ok"]
    assert record.audit_id == body["audit_id"] and record.actor == f"person:{SOL}"
    assert record.detail["purpose"] == "INC-7: why rejected"
    assert record.detail["roles"] == ["security-operator"]
    assert record.detail["sha256"] == body["sha256"]
    assert letters.payload["account"] not in str(record.detail)  # the record names, never holds

    encrypted = letters.ask(SOL, letters.encrypted, world=world)
    assert encrypted.status_code == 200, encrypted.text
    assert encrypted.json()["form"] == "jwe" and encrypted.json()["payload"] is None
    assert base64.b64decode(encrypted.json()["value"]) == letters.jwe  # as stored, not opened


@pytest.mark.integration
def test_no_purpose_or_no_letter_is_a_recorded_refusal(world: AccessWorld, letters: Letters) -> None:
    blank = letters.ask(SOL, letters.signed, purpose="  ", world=world)
    assert blank.status_code == 400 and letters.payload["account"] not in blank.text
    missing = (letters.signed[0], letters.encrypted[1] + 100)
    absent = letters.ask(SOL, missing, world=world)
    assert absent.status_code == 404, absent.text
    (record,) = _records(world, letters, missing)
    assert (record.outcome, record.reason) == ("rejected", "notfound")


@pytest.mark.integration
def test_if_the_record_cannot_be_committed_nothing_is_shown(
    world: AccessWorld, letters: Letters,
) -> None:
    """The audit log's database is not there: the service refuses (503) and shows nothing."""
    gone = make_url(normalise_url(world.url)).set(database=f"attest_gone_{uuid.uuid4().hex[:8]}")
    service = _service(world, letters.settings, gone.render_as_string(hide_password=False))
    client = TestClient(create_app(service, world.client.app.state.verifier))
    refused = letters.ask(SOL, letters.signed, world=world, client=client)
    assert refused.status_code == 503, refused.text
    assert "audit record could not be committed" in refused.json()["detail"]
    assert letters.payload["account"] not in refused.text
    assert letters.value.split(b".")[1].decode() not in refused.text


@pytest.mark.integration
def test_a_letter_whose_headers_hold_control_characters_is_shown_and_recorded_escaped(
    world: AccessWorld, letters: Letters,
) -> None:
    """Anyone with produce rights writes a letter's headers: a NUL in its reason must not make
    the record unwritable (Postgres refuses NUL in JSON), which would hide the letter for good."""
    (hostile,) = _produce(letters.settings, [letters.value], reason=b"bad\x00reason\x1b[2J")
    shown = letters.ask(SOL, hostile, world=world)
    assert shown.status_code == 200, shown.text
    assert shown.json()["payload"]["account"] == letters.payload["account"]
    (record,) = _records(world, letters, hostile)
    assert record.detail["reason"] == "bad\\u0000reason\\u001b[2J"


# -- the command line: `attest dlq show --payload` asks the service ---------------------------------


@pytest.fixture(scope="module")
def served(letters: Letters) -> Iterator[str]:
    port = choose_port(0)
    server = uvicorn.Server(uvicorn.Config(letters.client.app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started or not thread.is_alive(), 20, "uvicorn to start")
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _cli(settings: Settings) -> Iterator[typer.Typer]:
    app = typer.Typer()
    app.add_typer(dlq_cli.app, name="dlq")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dlq_cli, "get_settings", lambda: settings)
        yield app


@pytest.fixture(scope="module")
def cli(letters: Letters, served: str) -> Iterator[typer.Typer]:
    yield from _cli(letters.settings.model_copy(update={"access_url": served}))


def _token(world: AccessWorld, tmp_path: Path, who: str) -> Path:
    path = tmp_path / f"{who}.token"
    path.write_text(world.token(who))
    path.chmod(0o600)
    return path


def _flat(output: str) -> str:
    return " ".join(output.split())


@pytest.mark.integration
def test_dlq_show_payload_asks_the_service_and_shows_what_it_allows(
    cli: typer.Typer, world: AccessWorld, letters: Letters, tmp_path: Path,
) -> None:
    where = "{}:{}".format(*letters.signed)
    before = len(_records(world, letters, letters.signed))
    shown = RUNNER.invoke(cli, ["dlq", "show", where, "--payload", "--why", "INC-9: what was it",
                                "-t", str(_token(world, tmp_path, SOL))])
    assert shown.exit_code == 0, shown.output
    assert letters.payload["account"] in shown.output and "dlq.payload_shown" in shown.output
    assert LETTER_KEY.decode() in shown.output
    (record,) = _records(world, letters, letters.signed)[before:]
    assert record.detail["purpose"] == "INC-9: what was it" and record.actor == f"person:{SOL}"

    refused = RUNNER.invoke(cli, ["dlq", "show", where, "--payload", "--why", "curious",
                                  "-t", str(_token(world, tmp_path, TESS))])
    assert refused.exit_code == ExitCode.ACCESS_REFUSED == 11
    assert DEAD_LETTER_PAYLOAD in _flat(refused.output)
    assert letters.payload["account"] not in refused.output


@pytest.mark.integration
def test_without_a_token_the_client_shows_nothing_and_records_nothing_itself(
    cli: typer.Typer, letters: Letters, tmp_path: Path,
) -> None:
    """The old path (the client reads the letter, publishes its own record, prints) is gone."""
    where = "{}:{}".format(*letters.signed)
    plain = RUNNER.invoke(cli, ["dlq", "show", where])
    assert plain.exit_code == 0, plain.output
    assert "payload: hidden" in plain.output and "sha256" in plain.output
    assert letters.payload["account"] not in plain.output
    # The review found the Kafka key (a reference, in producers' usual practice) printed here.
    assert LETTER_KEY.decode() not in plain.output and "hidden (shown with --payload)" in plain.output

    no_token = RUNNER.invoke(cli, ["dlq", "show", where, "--payload", "--why", "INC-7"])
    assert no_token.exit_code == ExitCode.USAGE and "--token-file" in _flat(no_token.output)
    assert letters.payload["account"] not in no_token.output
    no_why = RUNNER.invoke(cli, ["dlq", "show", where, "--payload", "-t", str(tmp_path / "x")])
    assert no_why.exit_code == ExitCode.USAGE and "--why" in _flat(no_why.output)
    junk = tmp_path / "junk.token"
    junk.write_text("not a token")
    bad = RUNNER.invoke(cli, ["dlq", "show", where, "--payload", "--why", "INC-7", "-t", str(junk)])
    assert bad.exit_code == ExitCode.ACCESS_REFUSED and letters.payload["account"] not in bad.output
    published = [r for m in read_topic(letters.settings, AUDIT.name(letters.settings), max_s=8)
                 for r in records_in(m.value())]
    assert not [r for r in published if r.action == AuditAction.DLQ_PAYLOAD_SHOWN]


@pytest.mark.integration
def test_without_a_service_dlq_show_payload_is_one_sentence_and_exit_12(
    world: AccessWorld, letters: Letters, tmp_path: Path,
) -> None:
    closed = f"http://127.0.0.1:{choose_port(0)}"
    for app in _cli(letters.settings.model_copy(update={"access_url": closed})):
        result = RUNNER.invoke(app, ["dlq", "show", "{}:{}".format(*letters.signed), "--payload",
                                     "--why", "INC-7", "-t", str(_token(world, tmp_path, SOL))])
    assert result.exit_code == ExitCode.SERVICE_UNREACHABLE == 12
    assert "not reachable" in _flat(result.output) and "Traceback" not in result.output
    assert letters.payload["account"] not in result.output


# -- the policy (pure) -----------------------------------------------------------------------------


def test_the_bundled_policies_give_the_permission_to_the_security_operator_only() -> None:
    for name in ("government", "finance"):
        policy = load_policy(name)
        assert policy.roles_with(DEAD_LETTER_PAYLOAD) == {"security-operator"}
        assert "security-operator" not in policy.roles  # a duty, not a field-reading role


def test_a_policy_cannot_grant_an_unknown_permission_or_a_bare_string() -> None:
    base = {"policy": "p", "departments": {"d": {"db_role": "attest_d"}},
            "roles": {"r": {"department": "d"}}}
    with pytest.raises(PolicyError, match="unknown permission"):
        parse_policy({**base, "permissions": {"dead_letters.read_all": ["r"]}}, protection_catalog())
    with pytest.raises(PolicyError, match="list of roles"):
        parse_policy({**base, "permissions": {DEAD_LETTER_PAYLOAD: "security-operator"}},
                     protection_catalog())
    assert parse_policy(base, protection_catalog()).roles_with(DEAD_LETTER_PAYLOAD) == frozenset()


def test_an_encrypted_letter_is_named_not_opened() -> None:
    assert claimed_parts(b"a.b.c.d.e")[0] == "jwe" and claimed_parts(b"a.b.c.d.e")[2] is None
    assert claimed_parts(b"plain bytes") == ("other", None, None)
