"""Issue 14, item 5: verify trusts a pinned public key, never the writer's private key file.

Each test has its own database, state folder and audit topic; the chain's checkpoints are
signed by the service key in that state folder, exactly as the sink signs them.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from audit.checkpoints import CheckpointSigner
from audit.trust import KEY_PINNED_ACTION, pinned_path
from config.settings import Settings
from operations.broker_reads import BrokerReader
from operations.selection import PartitionRange
from schemas.audit import records_in
from security.keyfiles import generate_key
from streams.topics import AUDIT
from tests.audit.published_chain import build_chain, cli, own_settings, public_key_file

pytestmark = pytest.mark.integration


@pytest.fixture
def chain(stack_settings: Settings, chain_db: str, tmp_path: Path
          ) -> tuple[Settings, CheckpointSigner]:
    """30 rows, checkpoints at 10, 20, 30 (stored and published); nothing pinned yet."""
    settings = own_settings(stack_settings, chain_db, tmp_path / "state")
    return settings, build_chain(settings)


def _pin_records(settings: Settings) -> list[dict[str, object]]:
    topic = AUDIT.name(settings)
    with BrokerReader(settings) as reader:
        ranges = [PartitionRange(p, low, end) for p, (low, end) in reader.watermarks(topic).items()]
        return [r.detail for msg in reader.read(topic, ranges) for r in records_in(msg.value())
                if r.action == KEY_PINNED_ACTION]


def test_without_a_pinned_key_verify_does_not_pass(chain: tuple[Settings, CheckpointSigner]
                                                   ) -> None:
    """The writer's private key file is right there in the state folder: it is not trusted."""
    settings, _ = chain
    assert settings.service_key_path.exists()
    result = cli(settings, "verify")
    assert result.exit_code == 1, result.output
    assert "intact" not in result.stdout
    assert "no trusted key" in result.stderr and "no pinned key" in " ".join(result.stderr.split())
    assert "Traceback" not in result.output


def test_checkpoints_signed_by_another_key_than_the_pinned_one_are_refused(
        chain: tuple[Settings, CheckpointSigner], tmp_path: Path) -> None:
    settings, _ = chain
    other = CheckpointSigner(generate_key("attest-audit"))
    assert cli(settings, "pin", "--key", str(public_key_file(other, tmp_path / "o.jwk"))
               ).exit_code == 0
    result = cli(settings, "verify")
    assert result.exit_code == 2, result.output
    assert result.stdout.splitlines()[0] == (
        "TAMPERED: the checkpoint at seq=10 is not signed by a trusted key")


def test_pin_once_read_only_refuses_another_key_and_is_audited(
        chain: tuple[Settings, CheckpointSigner], tmp_path: Path) -> None:
    settings, signer = chain
    published = cli(settings, "pubkey")
    ours = tmp_path / "ours.jwk"
    ours.write_text(published.stdout)
    assert json.loads(published.stdout) == signer.public_jwk

    first = cli(settings, "pin", "--key", str(ours))
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith(f"pinned {signer.name} ")
    path = pinned_path(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert "\"d\"" not in path.read_text()
    verified = cli(settings, "verify")
    assert verified.exit_code == 0, verified.output
    assert verified.stdout.splitlines()[0] == "intact: 30 records, 3 checkpoints verified"
    assert f"from pinned in {path}" in verified.stdout

    assert cli(settings, "pin", "--key", str(ours)).stdout.startswith("already pinned")
    theirs = public_key_file(CheckpointSigner(generate_key("mallory")), tmp_path / "theirs.jwk")
    refused = cli(settings, "pin", "--key", str(theirs))
    assert refused.exit_code == 1
    assert "--replace" in refused.stderr
    assert json.loads(path.read_text())["keys"] == [signer.public_jwk]

    replaced = cli(settings, "pin", "--key", str(theirs), "--replace")
    assert replaced.exit_code == 0, replaced.output
    assert cli(settings, "verify").exit_code == 2
    details = _pin_records(settings)
    assert [d["replaced"] for d in details] == [[], [signer.name]]


def test_the_setting_is_the_key_itself_or_a_file(chain: tuple[Settings, CheckpointSigner],
                                                  tmp_path: Path) -> None:
    settings, signer = chain
    as_json = cli(settings, "verify", ATTEST_AUDIT_PUBLIC_KEY=json.dumps(signer.public_jwk))
    assert as_json.exit_code == 0, as_json.output
    assert "from ATTEST_AUDIT_PUBLIC_KEY" in as_json.stdout
    foreign = public_key_file(CheckpointSigner(generate_key("other")), tmp_path / "f.jwk")
    as_file = cli(settings, "verify", ATTEST_AUDIT_PUBLIC_KEY=str(foreign))
    assert as_file.exit_code == 2
    assert "is not signed by a trusted key" in as_file.stdout


def test_a_private_key_file_as_the_setting_is_reduced_to_its_public_half(
        chain: tuple[Settings, CheckpointSigner]) -> None:
    """Handing verify the writer's key file explicitly works, but only its public key is used."""
    settings, _ = chain
    result = cli(settings, "verify", ATTEST_AUDIT_PUBLIC_KEY=str(settings.service_key_path))
    assert result.exit_code == 0, result.output
