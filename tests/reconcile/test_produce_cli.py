"""`attest produce --scenario finance --mess --truth`: three sources, signed, truth written."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from config.settings import Settings
from security.keyfiles import generate_key, write_private_key
from streams.topics import DOCUMENTS, TRANSACTIONS
from tests.support.topics import read_topic
from tests.support.workers import settings_env


@pytest.mark.integration
def test_finance_run_with_truth(stack_settings: Settings, tmp_path: Path):
    settings = stack_settings.model_copy(update={"topic_prefix": stack_settings.topic_prefix + "prod."})
    kids = {}
    for source in ("core-ledger", "payment-switch", "bank-statement"):
        key = generate_key(source)
        write_private_key(key, settings.keys_dir)
        kids[source] = key.kid
    truth = tmp_path / "truth.json"
    args = ["produce", "--scenario", "finance", "--count", "60", "--seed", "4", "--mess", "0.5",
            "--truth", str(truth)]
    done = subprocess.run([sys.executable, "-m", "cli.main", *args], env=settings_env(settings),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    data = json.loads(truth.read_text())
    assert set(data["pairings"]) == {"core-ledger~payment-switch", "core-ledger~bank-statement"}
    messages = read_topic(settings, TRANSACTIONS.name(settings), idle_s=1.5)
    by_source = {}
    for m in messages:
        header, payload, _ = m.value().split(b".")
        head = json.loads(base64.urlsafe_b64decode(header + b"=" * (-len(header) % 4)))
        body = json.loads(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)))
        assert head["kid"] == kids[body["source"]]
        by_source[body["source"]] = by_source.get(body["source"], 0) + 1
    assert set(by_source) == set(kids) and by_source["core-ledger"] >= 60
    linked = {i for part in data["pairings"].values() for link in part["links"] for i in link}
    assert linked <= {json.loads(base64.urlsafe_b64decode(m.value().split(b".")[1] + b"==="))["event_id"]
                      for m in messages}


@pytest.mark.integration
def test_government_run_with_truth(stack_settings: Settings, tmp_path: Path):
    settings = stack_settings.model_copy(update={"topic_prefix": stack_settings.topic_prefix + "gov."})
    for agency in ("tax-bureau", "social-security-bureau"):
        write_private_key(generate_key(agency), settings.keys_dir)
    truth = tmp_path / "gov.json"
    args = ["produce", "--scenario", "government", "--count", "30", "--seed", "3", "--mess", "0.4",
            "--truth", str(truth)]
    done = subprocess.run([sys.executable, "-m", "cli.main", *args], env=settings_env(settings),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    data = json.loads(truth.read_text())
    assert data["count"] == 30 and data["inconsistent"]
    sent = read_topic(settings, DOCUMENTS.name(settings), idle_s=1.5)
    missing = sum(1 for rule in data["inconsistent"].values() if rule == "missing_at_agency")
    assert len(sent) == 60 - missing
