"""``attest audit signers add|list|revoke``: registering audit-signing keys is an audited
operator action (issue 14, item 4), and no key becomes usable without its audit record."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from audit.signer_keys import signer_key
from audit.signers import signer_snapshot
from audit.signing import verify_audit_message
from config.settings import Settings
from schemas.audit import AuditAction, records_in
from security.keyfiles import generate_key, write_private_key
from streams.admin import ensure_topics
from streams.topics import AUDIT
from tests.audit.published_chain import cli
from tests.support.topics import read_topic

pytestmark = pytest.mark.integration


@pytest.fixture
def own(stack_settings: Settings, chain_db: str, tmp_path: Path) -> Settings:
    """The test broker with topics of its own, a fresh database, keys of its own."""
    settings = stack_settings.model_copy(update={
        "database_url": chain_db, "state_dir": tmp_path / "state",
        "audit_signers_dir": tmp_path / "signers", "topic_prefix": f"sg{uuid.uuid4().hex[:6]}.",
    })
    ensure_topics(settings)
    return settings


def test_add_list_revoke_are_audited_and_signed_by_the_operator_key(own: Settings, tmp_path: Path) -> None:
    first = cli(own, "signers", "add", "operator")
    assert first.exit_code == 0, first.output
    assert first.output.startswith("registered audit-operator-") and "for operator:*" in first.output
    assert "already registered" in cli(own, "signers", "add", "operator").output

    exporter = generate_key("exporter", "Ed25519")
    public = tmp_path / "exporter.jwk"
    public.write_text(json.dumps(exporter.public_jwk))
    added = cli(own, "signers", "add", "exporter", "--public-key", str(public), "--actor", "exporter:*")
    assert added.exit_code == 0, added.output
    assert f"registered {exporter.kid} (exporter) for exporter:*" in added.output

    no_actor = cli(own, "signers", "add", "exporter", "--public-key", str(public))
    assert no_actor.exit_code == 1 and "--actor" in no_actor.output
    private = write_private_key(generate_key("leaky", "Ed25519"), tmp_path / "keys")
    leaked = cli(own, "signers", "add", "leaky", "--public-key", str(private), "--actor", "x")
    assert leaked.exit_code == 1 and "private key" in leaked.output
    not_ed25519 = tmp_path / "es256.jwk"
    not_ed25519.write_text(json.dumps(generate_key("p256", "ES256").public_jwk))
    assert cli(own, "signers", "add", "p", "--public-key", str(not_ed25519), "--actor", "p:*").exit_code == 1

    # (The scratch database also holds the session's own two signers.)
    listed = [s for s in json.loads(cli(own, "signers", "list", "--json").output)
              if s["registered_by"] != "operator:pytest"]
    assert [(s["component"], s["actors"], s["revoked_at"]) for s in listed] == [
        ("operator", ["operator:*"], None), ("exporter", ["exporter:*"], None)]

    assert cli(own, "signers", "revoke", exporter.kid).output.strip() == f"revoked {exporter.kid}"
    assert "revoked already" in cli(own, "signers", "revoke", exporter.kid).output
    assert cli(own, "signers", "revoke", "no-such-kid").exit_code == 1
    assert signer_snapshot(own.database_url)[exporter.kid].revoked_at is not None

    # Every change is on the audit topic, signed by the registered operator key.
    signers = signer_snapshot(own.database_url)
    messages = read_topic(own, AUDIT.name(own))
    for message in messages:
        assert verify_audit_message(message.value(), signers).signer.component == "operator"
    records = [r for m in messages for r in records_in(m.value())]
    assert sorted((r.action, r.correlation_id) for r in records) == sorted([  # keyed: any order
        (AuditAction.AUDIT_SIGNER_ADDED, listed[0]["kid"]),
        (AuditAction.AUDIT_SIGNER_ADDED, exporter.kid),
        (AuditAction.AUDIT_SIGNER_REVOKED, exporter.kid),
    ])
    assert all(r.actor.startswith("operator:") for r in records)
    (added_exporter,) = [r for r in records if r.action == AuditAction.AUDIT_SIGNER_ADDED
                         and r.correlation_id == exporter.kid]
    assert "d" not in added_exporter.detail and added_exporter.detail["x"] == exporter.public_jwk["x"]


def test_a_registration_whose_record_cannot_be_sent_is_revoked_again(own: Settings) -> None:
    """Exit 10, and the key is not usable: the sink would refuse everything it signs."""
    unreachable = own.model_copy(update={"kafka_bootstrap": "127.0.0.1:9"})
    result = cli(unreachable, "signers", "add", "worker")
    assert result.exit_code == 10, result.output
    kid = signer_key(own, "worker").kid
    worker = signer_snapshot(own.database_url)[kid]
    assert worker.component == "worker" and worker.revoked_at is not None


def test_pubkey_prints_the_public_part_that_add_then_registers(own: Settings, tmp_path: Path) -> None:
    """A component on another machine: `pubkey` there, `add --public-key` here."""
    printed = cli(own, "signers", "pubkey", "exporter")
    assert printed.exit_code == 0, printed.output
    jwk = json.loads(printed.output)
    assert set(jwk) <= {"kty", "crv", "x", "kid", "alg", "use"} and jwk["crv"] == "Ed25519"
    assert jwk["kid"] == signer_key(own, "exporter").kid  # the file made (0600) on first use
    path = tmp_path / "exporter.pub.jwk"
    path.write_text(printed.output)
    added = cli(own, "signers", "add", "exporter", "--public-key", str(path), "--actor", "exporter:*")
    assert added.exit_code == 0, added.output
    assert signer_snapshot(own.database_url)[jwk["kid"]].actors == ("exporter:*",)
    assert cli(own, "signers", "pubkey", "../etc").exit_code == 1
