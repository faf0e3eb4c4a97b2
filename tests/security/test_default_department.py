"""Review finding: a key registered the README way (no --department) spoke for every
department, so a ledger's key could file a document in the tax bureau's view. Now the key
speaks for its own source unless the operator says --any-department."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from config.settings import Settings
from storage.keys import key_snapshot
from tests.support.workers import settings_env

pytestmark = pytest.mark.integration


def _attest(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=settings_env(settings),
                          capture_output=True, text=True, timeout=120, check=False)


def test_a_generated_key_speaks_only_for_its_source_unless_told_otherwise(stack_settings: Settings) -> None:
    bound, relay = f"ledger-{uuid.uuid4().hex[:6]}", f"relay-{uuid.uuid4().hex[:6]}"
    assert _attest(stack_settings, "keys", "generate", "--source", bound).returncode == 0
    made = _attest(stack_settings, "keys", "generate", "--source", relay, "--any-department")
    assert made.returncode == 0, made.stderr
    both = _attest(stack_settings, "keys", "generate", "--source", relay, "--department", "x",
                   "--any-department")
    assert both.returncode != 0 and "not both" in both.stderr
    departments = {r.source: r.department for r in key_snapshot(stack_settings.database_url).values()
                   if r.source in (bound, relay)}
    assert departments == {bound: bound, relay: None}
