"""``attest audit verify / query / pubkey`` as an auditor runs them: output and exit codes."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from bench.ledger import child_env
from cli.audit import app
from config.settings import Settings, get_settings
from security.keyfiles import generate_key
from tests.audit.conftest import make_records, tamper
from tests.audit.published_chain import build_chain, cli, own_settings, public_key_file

pytestmark = pytest.mark.integration


@pytest.fixture
def env(stack_settings: Settings, chain_db: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A database with 30 records and checkpoints at 10, 20, 30 signed by the service key,
    published on an audit topic of its own; the service's public key is pinned."""
    settings = own_settings(stack_settings, chain_db, tmp_path)
    signer = build_chain(settings)
    assert cli(settings, "pin", "--key", str(public_key_file(signer, tmp_path / "pub.jwk"))
               ).exit_code == 0
    get_settings.cache_clear()
    yield {**{k: v for k, v in child_env(settings).items() if k.startswith("ATTEST_")},
           "ATTEST_AUDIT_PUBLIC_KEY": ""}
    get_settings.cache_clear()


def run(env: dict[str, str], *args: str) -> Result:
    get_settings.cache_clear()
    return CliRunner().invoke(app, list(args), env=env)


def test_verify_intact_then_tampered(env: dict[str, str]) -> None:
    result = run(env, "verify")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "intact: 30 records, 3 checkpoints verified"
    tamper(env["ATTEST_DATABASE_URL"], "UPDATE audit_log SET actor = 'x' WHERE seq = 12")
    result = run(env, "verify")
    assert result.exit_code == 2
    assert result.stdout.startswith("TAMPERED: row seq=12 (audit_id ")
    assert "was changed" in result.stdout.splitlines()[0]


def test_verify_with_explicit_keys(env: dict[str, str], tmp_path: Path) -> None:
    published = run(env, "pubkey")
    assert published.exit_code == 0
    jwk = json.loads(published.stdout)
    assert jwk["kty"] == "OKP" and "d" not in jwk
    ours, theirs = tmp_path / "ours.jwk", tmp_path / "theirs.jwk"
    ours.write_text(published.stdout)
    theirs.write_text(json.dumps(generate_key("other").public_jwk))
    assert run(env, "verify", "--key", str(ours)).exit_code == 0
    foreign = run(env, "verify", "--key", str(theirs))
    assert foreign.exit_code == 2
    assert "the checkpoint at seq=10 is not signed by a trusted key" in foreign.stdout


def test_verify_without_any_key_says_so(env: dict[str, str], tmp_path: Path) -> None:
    empty = tmp_path / "empty-state"
    result = run({**env, "ATTEST_STATE_DIR": str(empty)}, "verify")
    assert result.exit_code == 1
    assert "no trusted key" in result.stderr and "Traceback" not in result.output


def test_verify_exit_code_through_the_real_command(env: dict[str, str], stack_settings: Settings
                                                   ) -> None:
    tamper(env["ATTEST_DATABASE_URL"], "DELETE FROM audit_log WHERE seq = 5")
    environment = {**child_env(stack_settings), **env}
    result = subprocess.run([sys.executable, "-m", "cli.main", "audit", "verify"], env=environment,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2, result.stderr
    assert result.stdout.startswith("TAMPERED: row seq=5 is missing (deleted)")


def test_query_filters_formats_and_paging(env: dict[str, str]) -> None:
    records = make_records(30)
    event = records[4].correlation_id or ""
    by_event = json.loads(run(env, "query", "--event-id", event, "--format", "json").stdout)
    assert [r["seq"] for r in by_event] == [5]
    assert by_event[0]["audit_id"] == records[4].audit_id and len(by_event[0]["row_hash"]) == 64

    subject = json.loads(run(env, "query", "--subject", "acct-3", "--format", "json").stdout)
    assert [r["seq"] for r in subject] == [i + 1 for i in range(30) if i % 7 == 3]

    window = run(env, "query", "--action", "event.rejected", "--since", "2026-11-01T09:00:05Z",
                 "--until", "2026-11-01T09:00:15Z", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(window.stdout)))
    assert [int(r["seq"]) for r in rows] == [6, 9, 12, 15]
    assert rows[0]["reason"] == "bad_signature" and json.loads(rows[0]["detail"])["n"] == 5

    page = run(env, "query", "--actor", "worker:test:1", "--since", "3650d", "--limit", "10",
               "--format", "json")
    assert [r["seq"] for r in json.loads(page.stdout)] == list(range(1, 11))
    assert "--after-seq 10" in page.stderr
    nxt = json.loads(run(env, "query", "--actor", "worker:test:1", "--after-seq", "10",
                         "--limit", "10", "--format", "json").stdout)
    assert nxt[0]["seq"] == 11

    table = run(env, "query", "--limit", "3")
    assert table.exit_code == 0 and "event.accepted" in table.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--since", "yesterday"], "--since 'yesterday' is not a time"),
    (["--until", "2026-13-01"], "--until '2026-13-01' is not a time"),
    (["--since", "1h", "--until", "2h"], "--since must be earlier than --until"),
])
def test_query_errors_are_one_sentence(env: dict[str, str], args: list[str], message: str) -> None:
    result = run(env, "query", *args)
    assert result.exit_code == 1
    assert message in " ".join(result.stderr.split())
    assert result.exception is None or isinstance(result.exception, SystemExit)
