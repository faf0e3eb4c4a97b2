"""The CLI as an operator uses it: real processes, real services, one-sentence errors."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cli.main import app
from config.settings import Settings
from security.keyfiles import generate_key
from storage import keys as registry
from tests.support.workers import settings_env


def _all_command_paths() -> list[list[str]]:
    root = typer.main.get_command(app)
    paths: list[list[str]] = []

    def walk(command: object, prefix: list[str]) -> None:
        paths.append(prefix)
        # Typer vendors its own click; duck-type groups instead of isinstance(click.Group).
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*prefix, name])

    walk(root, [])
    return paths


@pytest.mark.parametrize("path", _all_command_paths(), ids=lambda p: " ".join(p) or "attest")
def test_every_command_has_help(path: list[str]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    # Every command says what it is for, not just its options.
    assert len(result.output.split("Options")[0].split("Usage:")[1].strip().splitlines()) >= 2


def attest(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args], env=settings_env(settings),
        capture_output=True, text=True, timeout=120, check=False,
    )


def assert_one_sentence_error(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    assert "error" in result.stderr.lower()


@pytest.mark.integration
def test_keys_generate_writes_a_private_file_0600_and_registers(stack_settings: Settings) -> None:
    result = attest(stack_settings, "keys", "generate", "--source", "cli-ledger")
    assert result.returncode == 0, result.stderr
    files = list(Path(stack_settings.keys_dir).glob("cli-ledger-*.jwk"))
    assert len(files) == 1
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(stack_settings.keys_dir).stat().st_mode) == 0o700
    kid = json.loads(files[0].read_text())["jwk"]["kid"]
    record = registry.key_snapshot(stack_settings.database_url)[kid]
    assert record.source == "cli-ledger" and "d" not in record.public_jwk
    listed = attest(stack_settings, "keys", "list")
    assert kid in listed.stdout.replace("\n", "") or kid[:20] in listed.stdout


@pytest.mark.integration
def test_keys_add_import_and_revoke(stack_settings: Settings, tmp_path: Path) -> None:
    es = generate_key("cli-switch", "ES256")
    public = tmp_path / "es.jwk"
    public.write_text(json.dumps(es.public_jwk))
    assert attest(stack_settings, "keys", "add", "--jwk", str(public), "--source", "cli-switch"
                  ).returncode == 0

    private = tmp_path / "private.jwk"
    private.write_text(json.dumps(es._private_jwk))
    assert_one_sentence_error(
        attest(stack_settings, "keys", "add", "--jwk", str(private), "--source", "cli-switch"))

    a, b = generate_key("cli-agency"), generate_key("cli-agency", "ES256")
    jwks = tmp_path / "set.jwks"
    jwks.write_text(json.dumps({"keys": [{**a.public_jwk, "source": "cli-agency"}, b.public_jwk]}))
    result = attest(stack_settings, "keys", "import", "--jwks", str(jwks), "--source", "cli-agency")
    assert result.returncode == 0, result.stderr
    snapshot = registry.key_snapshot(stack_settings.database_url)
    assert snapshot[a.kid].source == snapshot[b.kid].source == "cli-agency"

    revoked = attest(stack_settings, "keys", "revoke", a.kid, "--reason", "rotated")
    assert revoked.returncode == 0, revoked.stderr
    assert registry.key_snapshot(stack_settings.database_url)[a.kid].revoked_reason == "rotated"
    assert_one_sentence_error(attest(stack_settings, "keys", "revoke", "no-such", "--reason", "x"))


@pytest.mark.integration
def test_operator_mistakes_get_one_sentence(stack_settings: Settings, tmp_path: Path) -> None:
    assert_one_sentence_error(attest(stack_settings, "dlq", "show", "not-a-position"))
    assert_one_sentence_error(attest(stack_settings, "produce", "--source", "nobody-has-this"))
    missing = tmp_path / "none.jwk"
    assert attest(stack_settings, "keys", "add", "--jwk", str(missing), "--source", "x").returncode != 0
    unreachable = stack_settings.model_copy(update={"database_url":
                                                    "postgresql://postgres@127.0.0.1:1/none"})
    assert_one_sentence_error(attest(unreachable, "keys", "list"))


def test_dev_status_without_a_stack_says_stopped(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTEST_")}
    env["ATTEST_STATE_DIR"] = str(tmp_path)
    result = subprocess.run([sys.executable, "-m", "cli.main", "dev", "status"], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 3
    assert "stopped" in result.stdout
    env_result = subprocess.run([sys.executable, "-m", "cli.main", "dev", "env"], env=env,
                                capture_output=True, text=True, timeout=60, check=False)
    assert_one_sentence_error(env_result)


@pytest.mark.integration
def test_produce_government_needs_agency_keys_then_sends(stack_settings: Settings) -> None:
    missing = attest(stack_settings, "produce", "--scenario", "government", "--count", "4")
    assert_one_sentence_error(missing)
    assert "tax-bureau" in missing.stderr or "social-security-bureau" in missing.stderr
    for agency in ("tax-bureau", "social-security-bureau"):
        assert attest(stack_settings, "keys", "generate", "--source", agency).returncode == 0
    sent = attest(stack_settings, "produce", "--scenario", "government", "--count", "4")
    assert sent.returncode == 0, sent.stderr
    assert "sent 4 government events" in sent.stdout


def test_a_bad_setting_value_is_one_sentence(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTEST_")}
    env.update({"ATTEST_STATE_DIR": str(tmp_path), "ATTEST_LOG_LEVEL": "verbose"})
    result = subprocess.run([sys.executable, "-m", "cli.main", "dlq", "list"], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert_one_sentence_error(result)
    assert "ATTEST_LOG_LEVEL" in result.stderr


@pytest.mark.integration
def test_keys_import_checks_every_key_before_registering_any(
    stack_settings: Settings, tmp_path: Path
) -> None:
    taken = generate_key("cli-importer")
    registry.add_key(stack_settings.database_url, taken.kid, taken.source, taken.alg,
                     taken.public_jwk)
    fresh, impostor = generate_key("cli-importer"), generate_key("cli-importer")
    clash = {**impostor.public_jwk, "kid": taken.kid}
    jwks = tmp_path / "clash.jwks"
    jwks.write_text(json.dumps({"keys": [fresh.public_jwk, clash]}))
    result = attest(stack_settings, "keys", "import", "--jwks", str(jwks), "--source", "cli-importer")
    assert_one_sentence_error(result)
    assert fresh.kid not in registry.key_snapshot(stack_settings.database_url)
