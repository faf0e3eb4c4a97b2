"""`attest keys intake-key` and `attest produce --encrypt` (issue 14, item 3, part A)."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from config.settings import Settings
from security.intake_keys import load_intake_keys
from security.keyfiles import generate_key, write_private_key
from security.nested import open_nested
from security.signatures import b64url_decode
from streams.topics import TRANSACTIONS
from tests.support.topics import read_topic
from tests.support.workers import settings_env

pytestmark = pytest.mark.integration


def attest(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=settings_env(settings),
                          capture_output=True, text=True, timeout=120, check=False)


def test_intake_key_generate_and_public_print_only_public_halves(stack_settings: Settings,
                                                                tmp_path: Path) -> None:
    settings = stack_settings.model_copy(update={"state_dir": tmp_path,
                                                 "kafka_bootstrap": stack_settings.kafka_bootstrap})
    none = attest(settings, "keys", "intake-key", "public")
    assert none.returncode == 1 and "intake-key generate" in none.stderr
    made = attest(settings, "keys", "intake-key", "generate", "--kid", "attest-intake-a")
    assert made.returncode == 0, made.stderr
    first = json.loads(made.stdout)
    assert "d" not in first and first["kid"] == "attest-intake-a"
    assert stat.S_IMODE((tmp_path / "intake-keys" / "attest-intake-a.jwk").stat().st_mode) == 0o600
    assert attest(settings, "keys", "intake-key", "generate", "--kid", "attest-intake-a").returncode == 1
    assert attest(settings, "keys", "intake-key", "generate", "--kid", "../x").returncode == 1
    assert attest(settings, "keys", "intake-key", "generate", "--kid", "attest-intake-b").returncode == 0
    newest = json.loads(attest(settings, "keys", "intake-key", "public").stdout)
    jwks = json.loads(attest(settings, "keys", "intake-key", "public", "--jwks").stdout)
    assert newest["kid"] == "attest-intake-b"
    assert [k["kid"] for k in jwks["keys"]] == ["attest-intake-b", "attest-intake-a"]
    assert not any("d" in k for k in jwks["keys"])


def test_produce_encrypt_sends_nested_tokens(stack_settings: Settings) -> None:
    source = f"sealed-{uuid.uuid4().hex[:6]}"
    write_private_key(generate_key(source), stack_settings.keys_dir)
    settings = stack_settings.model_copy(update={"topic_prefix": f"p{uuid.uuid4().hex[:6]}."})
    sent = attest(settings, "produce", "--count", "3", "--source", source, "--encrypt")
    assert sent.returncode == 0, sent.stderr
    ring = load_intake_keys(settings.intake_keys_dir)  # `attest dev up` made one
    assert f"encrypted to {ring.newest.kid}" in " ".join(sent.stdout.split())
    messages = read_topic(settings, TRANSACTIONS.name(settings))
    assert len(messages) == 3
    for message in messages:
        value = message.value()
        inner = open_nested(value, ring, 64 * 1024)
        assert source.encode() not in value and inner.count(b".") == 2
        # The key travels in clear: an encrypted event is keyed by its random event id, not
        # by the reference it was encrypted to hide (a review found the reference there).
        payload = json.loads(b64url_decode(inner.split(b".")[1]))
        assert message.key() == payload["event_id"].encode()
        assert payload["reference"].encode() != message.key()
