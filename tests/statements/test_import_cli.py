"""``attest import`` against the real embedded broker: signed, idempotent, all or nothing."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from config.settings import Settings
from security.keyfiles import generate_key, write_private_key
from streams.admin import ensure_topics
from streams.topics import TRANSACTIONS
from tests.support.topics import read_topic
from tests.support.workers import settings_env

DATA = Path(__file__).parent / "data"


def attest(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=settings_env(settings),
                          capture_output=True, text=True, timeout=120, check=False)


def _statement_ids(settings: Settings) -> list[str]:
    out = []
    for message in read_topic(settings, TRANSACTIONS.name(settings), idle_s=1.5):
        parts = message.value().split(b".")
        # The session's topic also holds other tests' garbage and hostile messages.
        try:
            body = json.loads(base64.urlsafe_b64decode(parts[1] + b"=" * (-len(parts[1]) % 4)))
        except (IndexError, ValueError, RecursionError):
            continue
        if isinstance(body, dict) and body.get("source") == "bank-statement":
            out.append(body["event_id"])
    return out


@pytest.mark.integration
def test_import_sends_signed_events_once_per_entry_and_nothing_for_a_broken_file(stack_settings):
    key = generate_key("bank-statement")
    write_private_key(key, stack_settings.keys_dir)
    ensure_topics(stack_settings)
    before = _statement_ids(stack_settings)

    broken = attest(stack_settings, "import", "mt940", str(DATA / "broken_amount.sta"))
    assert broken.returncode != 0 and "Traceback" not in broken.stderr
    assert "line 7" in broken.stderr and "nothing was sent" in " ".join(broken.stderr.split())
    assert _statement_ids(stack_settings) == before

    for _ in range(2):
        done = attest(stack_settings, "import", "camt053", str(DATA / "bank_a_camt053_v02.xml"))
        assert done.returncode == 0, done.stderr
    sent = _statement_ids(stack_settings)[len(before):]
    assert len(sent) == 4 and sent[:2] == sent[2:]  # the same ids both times
    tokens = read_topic(stack_settings, TRANSACTIONS.name(stack_settings), idle_s=1.5)
    header = json.loads(base64.urlsafe_b64decode(tokens[-1].value().split(b".")[0] + b"=="))
    assert header["kid"] == key.kid and header["typ"] == "attest.transaction.v1"
