"""Security review: deleting an intake key file retires the key in a running worker.

Rotation ends with deleting the old key's file (docs/events.md). ``HeldIntakeKeys`` used to
re-read its folder only when a token named a kid it did not hold, so the deleted key kept
opening tokens until a restart. It now re-reads every ``refresh_s`` (the workers pass
``ATTEST_KEYRING_REFRESH_S``) and drops the keys whose files are gone; between re-reads a
token costs one clock comparison, never a look at the folder.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agents.intake import IntakeProcessor
from config.settings import Settings
from scenarios.finance import transaction_payloads
from schemas.catalog import TRANSACTION_V1
from security.errors import Rejection
from security.intake_keys import HeldIntakeKeys, generate_intake_key, write_intake_key
from security.keyfiles import generate_key
from security.nested import open_nested, seal_for_intake
from security.reasons import RejectReason
from streams.producer import sign_payload

OLD, NEW = "attest-intake-old", "attest-intake-new"


def _rotated(folder: Path) -> tuple[list[float], HeldIntakeKeys]:
    """A worker holding OLD at t=0; then NEW is written and OLD's file deleted (rotation)."""
    write_intake_key(generate_intake_key(OLD), folder)
    clock = [0.0]
    held = HeldIntakeKeys(folder, min_reload_s=5, refresh_s=30, clock=lambda: clock[0])
    write_intake_key(generate_intake_key(NEW), folder)
    (folder / f"{OLD}.jwk").unlink()
    return clock, held


def test_a_deleted_key_is_dropped_at_the_next_periodic_reread(tmp_path: Path) -> None:
    clock, held = _rotated(tmp_path / "intake-keys")
    clock[0] = 29.0
    # Within the interval nothing reads the folder: the held key still answers (no per-token
    # look at the files), and a known kid does not trigger a re-read.
    assert held.get(OLD) is not None
    clock[0] = 30.0
    assert held.get(OLD) is None  # the first token after the interval: the folder re-read
    assert held.get(NEW) is not None
    assert set(held.key_set.keys) == {NEW}


def test_the_reviews_scenario_days_later_without_a_restart(tmp_path: Path) -> None:
    clock, held = _rotated(tmp_path / "intake-keys")
    clock[0] = 10**6
    assert held.get(OLD) is None  # no longer opens tokens to the removed key
    assert held.get(NEW) is not None


def test_a_new_kid_is_still_picked_up_between_periodic_rereads(tmp_path: Path) -> None:
    clock, held = _rotated(tmp_path / "intake-keys")
    clock[0] = 1.0
    assert held.get(NEW) is None  # a miss re-reads at most every min_reload_s
    clock[0] = 6.0
    assert held.get(NEW) is not None  # the miss re-read: NEW is held, OLD dropped with it
    assert held.get(OLD) is None


def test_a_deleted_key_is_dropped_even_while_another_file_is_unusable(tmp_path: Path) -> None:
    """A folder that cannot be read whole keeps the held keys, but not a deleted one."""
    folder = tmp_path / "intake-keys"
    clock, held = _rotated(folder)
    clock[0] = 6.0
    assert held.get(NEW) is not None
    write_intake_key(generate_intake_key("attest-intake-third"), folder)
    os.chmod(folder / f"{NEW}.jwk", 0o644)  # group-readable: the whole load is refused
    (folder / "attest-intake-third.jwk").unlink()
    write_intake_key(generate_intake_key(OLD), folder)  # OLD's file is back, NEW's stays
    clock[0] = 40.0
    assert held.get(NEW) is not None  # kept: its file is still there
    assert held.get(OLD) is None  # not held before, not loaded from a refused folder
    (folder / f"{NEW}.jwk").unlink()
    clock[0] = 80.0
    assert held.get(NEW) is None  # file gone: dropped although the folder is still refused


def test_a_token_to_a_deleted_key_is_undecryptable_after_the_interval(tmp_path: Path) -> None:
    folder = tmp_path / "intake-keys"
    old = generate_intake_key(OLD)
    write_intake_key(old, folder)
    clock = [0.0]
    held = HeldIntakeKeys(folder, refresh_s=30, clock=lambda: clock[0])
    signer = generate_key("secret-ledger", "Ed25519", kid="secret-ledger-ed")
    now = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)
    token = sign_payload(signer, transaction_payloads(1, signer.source, seed=3, now=now)[0],
                         TRANSACTION_V1)
    nested = seal_for_intake(token, old.public_jwk)
    assert open_nested(nested, held, 64 * 1024) == token
    (folder / f"{OLD}.jwk").unlink()
    clock[0] = 30.0
    with pytest.raises(Rejection) as caught:
        open_nested(nested, held, 64 * 1024)
    assert caught.value.reason is RejectReason.UNDECRYPTABLE


def test_the_intake_worker_rereads_every_keyring_refresh_s(tmp_path: Path) -> None:
    """The worker's default intake keys use ``ATTEST_KEYRING_REFRESH_S`` (here tiny)."""
    settings = Settings(state_dir=tmp_path, keyring_refresh_s=1e-6)
    write_intake_key(generate_intake_key(OLD), settings.intake_keys_dir)
    processor = IntakeProcessor(settings, "test", {})
    keys = processor._intake_keys  # what verify_message opens nested tokens with
    (settings.intake_keys_dir / f"{OLD}.jwk").unlink()
    start = time.monotonic()
    while time.monotonic() - start < 1e-5:  # let the (real) interval pass: microseconds
        pass
    assert keys.get(OLD) is None
