"""`attest keys ... --require-encryption` and `attest keys require-encryption KID [--off]`:
the registry flag set, changed and audited (``key.added`` / ``key.encryption_changed``)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from config.settings import Settings
from schemas.audit import AuditAction, records_in
from security.keyfiles import generate_key
from storage.keys import key_snapshot
from streams.topics import AUDIT
from tests.support.topics import read_topic
from tests.support.workers import settings_env

pytestmark = pytest.mark.integration


def attest(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=settings_env(settings),
                          capture_output=True, text=True, timeout=120, check=False)


def audited(settings: Settings, kid: str) -> list[tuple[str, dict[str, object]]]:
    return [(r.action, r.detail) for m in read_topic(settings, AUDIT.name(settings))
            for r in records_in(m.value()) if r.correlation_id == kid]


def test_require_encryption_is_set_changed_and_audited(stack_settings: Settings, tmp_path: Path) -> None:
    s, source = stack_settings, f"sealed-{uuid.uuid4().hex[:6]}"
    made = attest(s, "keys", "generate", "--source", source, "--require-encryption")
    assert made.returncode == 0, made.stderr
    (kid,) = [r.kid for r in key_snapshot(s.database_url).values() if r.source == source]
    assert key_snapshot(s.database_url)[kid].encrypted_only

    public = generate_key(f"{source}-b", kid=f"{source}-b-1")
    (tmp_path / "b.jwk").write_text(json.dumps(public.public_jwk))
    assert attest(s, "keys", "add", "--jwk", str(tmp_path / "b.jwk"), "--source", public.source,
                  "--require-encryption").returncode == 0
    assert key_snapshot(s.database_url)[public.kid].encrypted_only
    # Registering it again without the flag is a conflict that names the command, not a
    # silent "already registered" that leaves the operator believing otherwise.
    again = attest(s, "keys", "add", "--jwk", str(tmp_path / "b.jwk"), "--source", public.source)
    assert again.returncode != 0 and f"require-encryption {public.kid} --off" in again.stderr

    off = attest(s, "keys", "require-encryption", kid, "--off")
    assert off.returncode == 0, off.stderr
    assert not key_snapshot(s.database_url)[kid].encrypted_only
    unchanged = attest(s, "keys", "require-encryption", kid, "--off")
    assert unchanged.returncode == 0 and "nothing changed" in unchanged.stdout
    assert attest(s, "keys", "require-encryption", kid).returncode == 0
    assert key_snapshot(s.database_url)[kid].encrypted_only
    missing = attest(s, "keys", "require-encryption", f"no-such-{uuid.uuid4().hex[:6]}")
    assert missing.returncode == 1 and "no registered key" in missing.stderr

    records = audited(s, kid)
    assert (AuditAction.KEY_ADDED, {"source": source, "alg": "Ed25519", "department": source,
                                    "encrypted_only": True}) in records
    changes = [d["encrypted_only"] for a, d in records if a == AuditAction.KEY_ENCRYPTION_CHANGED]
    assert changes == [False, True]  # the no-op --off changed and audited nothing
