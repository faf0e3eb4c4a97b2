"""Issue 14, item 5: a tail cut off together with the stored checkpoints that covered it is
caught by the newest checkpoint published on the audit topic; a topic that cannot be read is
never a pass. Each test has its own database, state folder and audit topic."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agents.audit_sink import checkpoint_record
from audit.chain import hashed_view, row_hash
from audit.checkpoints import CheckpointSigner, checkpoint_body
from audit.log import Checkpoint, chain_head
from config.settings import Settings
from security.keyfiles import generate_key
from streams.audit_publisher import publish_audit
from tests.audit.conftest import tamper
from tests.audit.published_chain import build_chain, cli, own_settings, public_key_file
from tests.audit.test_tamper import row_at

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(stack_settings: Settings, chain_db: str, tmp_path: Path) -> Settings:
    """30 rows, checkpoints at 10, 20, 30 stored and published; the signer's key pinned."""
    settings = own_settings(stack_settings, chain_db, tmp_path / "state")
    signer = build_chain(settings)
    pinned = cli(settings, "pin", "--key", str(public_key_file(signer, tmp_path / "pub.jwk")))
    assert pinned.exit_code == 0, pinned.output
    return settings


def test_intact_log_matches_the_topic(settings: Settings) -> None:
    result = cli(settings, "verify")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "intact: 30 records, 3 checkpoints verified"
    assert "(the audit topic's newest checkpoint, seq=30, matches the log)" in result.stdout


def test_tail_deleted_with_its_checkpoint_is_caught_through_the_topic(settings: Settings) -> None:
    """Rows 26..30 and the stored checkpoint at 30 deleted: the database alone looks intact
    (20 signed, 5 chained but unsigned), the topic's checkpoint at 30 says otherwise."""
    tamper(settings.database_url, "DELETE FROM audit_log WHERE seq > 25",
           "DELETE FROM audit_checkpoints WHERE last_seq > 20")
    result = cli(settings, "verify")
    assert result.exit_code == 2, result.output
    assert result.stdout.splitlines()[0] == (
        "TAMPERED: rows seq=26..30 are missing (deleted) after the last stored checkpoint "
        "(seq=20): the audit topic's checkpoint at seq=30 proves they existed")


def test_whole_signed_tail_deleted(settings: Settings) -> None:
    tamper(settings.database_url, "DELETE FROM audit_log WHERE seq > 20",
           "DELETE FROM audit_checkpoints WHERE last_seq > 20")
    result = cli(settings, "verify")
    assert result.exit_code == 2, result.output
    assert result.stdout.startswith(
        "TAMPERED: rows seq=21..30 are missing (deleted) after the last stored checkpoint (seq=20)")


def test_tail_rewritten_after_the_last_stored_checkpoint(settings: Settings) -> None:
    """Rows 21..30 edited and rehashed, the stored checkpoint at 30 deleted."""
    url = settings.database_url
    tamper(url, "DELETE FROM audit_checkpoints WHERE last_seq > 20",
           "UPDATE audit_log SET actor = 'operator:mallory' WHERE seq = 21")
    prev = str(row_at(url, 20)["row_hash"])
    for seq in range(21, 31):
        digest = row_hash(hashed_view(row_at(url, seq)), prev, seq)
        tamper(url, "UPDATE audit_log SET prev_hash = :p, row_hash = :h WHERE seq = :s",
               params={"p": prev, "h": digest, "s": seq})
        prev = digest
    result = cli(settings, "verify")
    assert result.exit_code == 2, result.output
    assert result.stdout.splitlines()[0] == (
        "TAMPERED: rows seq=21..30 were rewritten: the chain no longer matches the audit "
        "topic's checkpoint at seq=30")


def test_topic_checkpoint_signed_by_another_key_is_refused(settings: Settings) -> None:
    mallory = CheckpointSigner(generate_key("mallory"))
    seq, head = chain_head(settings.database_url)
    forged = Checkpoint(seq + 5, head, mallory.sign(checkpoint_body(seq + 5, head)), mallory.name,
                        datetime.now(UTC))
    publish_audit(settings, [checkpoint_record(forged, "operator:mallory")])
    result = cli(settings, "verify")
    assert result.exit_code == 2, result.output
    assert result.stdout.splitlines()[0] == (
        "TAMPERED: the audit topic's checkpoint at seq=35 is not signed by a trusted key")


def test_unreachable_broker_is_not_a_pass(settings: Settings) -> None:
    result = cli(settings.model_copy(update={"kafka_bootstrap": "127.0.0.1:9"}), "verify")
    assert result.exit_code == 6, result.output
    assert result.stdout.startswith("NOT VERIFIED: the stored chain holds (30 records, "
                                    "3 checkpoints verified), but the audit topic could not be read")
    assert "intact" not in result.stdout


def test_topic_without_checkpoints_is_not_a_pass(settings: Settings) -> None:
    """Another (empty) audit topic: the database has checkpoints the witness cannot confirm."""
    elsewhere = own_settings(settings, settings.database_url, settings.state_dir)
    result = cli(elsewhere, "verify", "--publish-wait", "1")
    assert result.exit_code == 3, result.output
    assert result.stdout.startswith("NOT VERIFIED: ") and "holds no checkpoint" in result.stdout


def test_a_checkpoint_published_while_verify_waits_is_found(
    stack_settings: Settings, chain_db: str, tmp_path: Path
) -> None:
    """The sink stores a checkpoint, then publishes it: verify run in between must wait for
    the topic instead of saying NOT VERIFIED (a fault-suite run caught exactly that)."""
    settings = own_settings(stack_settings, chain_db, tmp_path / "state")
    signer = build_chain(settings)
    assert cli(settings, "pin", "--key", str(public_key_file(signer, tmp_path / "pub.jwk"))).exit_code == 0
    late = own_settings(settings, settings.database_url, settings.state_dir)  # an empty topic
    seq, head = chain_head(settings.database_url)
    newest = Checkpoint(seq, head, signer.sign(checkpoint_body(seq, head)), signer.name,
                        datetime.now(UTC))
    publisher = threading.Timer(2.0, publish_audit, (late, [checkpoint_record(newest, "worker:late")]))
    publisher.start()
    try:
        result = cli(late, "verify", "--publish-wait", "30")
    finally:
        publisher.join()
    assert result.exit_code == 0, result.output
    assert f"(the audit topic's newest checkpoint, seq={seq}, matches the log)" in result.stdout


def test_tail_shows_the_published_checkpoints(settings: Settings) -> None:
    """``attest audit tail`` (its consumer now lives in audit.published) reads the topic."""
    result = cli(settings, "tail", "--from-beginning", "--count", "4", "--idle-exit", "10")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if "audit.checkpoint" in line]
    assert sorted(line.split()[2] for line in lines) == [
        f"audit-checkpoint:{n}" for n in (10, 20, 30)], result.stdout  # partitions interleave
