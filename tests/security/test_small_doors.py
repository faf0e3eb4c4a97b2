"""Issue 14, item 10 and issue 15: the small side doors.

* ``--kid`` names a file in the keys folder: a path separator (or a leading dot) is refused.
* The state folder is 0700 (0711 as root, for the embedded Postgres's own user) and its logs 0600.
* Producer and service key files that group or others can read are refused.
* The worker's web endpoint listens on 127.0.0.1 unless ``ATTEST_WORKER_WEB_BIND`` says otherwise.
* A private key file is written whole or not at all (a full disk once left an empty one).
"""

from __future__ import annotations

import os
import resource
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from config.settings import Settings
from security.errors import SecurityError, UnusableKey
from security.keyfiles import (
    InvalidKid,
    SigningKey,
    check_kid,
    generate_key,
    keys_for_source,
    load_private_key,
    write_private_key,
)
from security.private_files import open_private_log, private_folder, touch_private

ROOT = Path(__file__).resolve().parents[2]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- --kid ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kid", ["../escape", "a/b", "/etc/passwd", "a\\b", ".hidden", "..", ".",
                                 "", "nul\x00byte", "new\nline", "x" * 201, "sp ace"])
def test_a_kid_that_cannot_name_a_key_file_is_refused(kid: str) -> None:
    with pytest.raises(InvalidKid):
        check_kid(kid)
    if kid:  # an empty --kid means "make one up"
        with pytest.raises(InvalidKid):
            generate_key("core-ledger", kid=kid)


def test_ordinary_kids_pass() -> None:
    for kid in ("core-ledger-20261201-0a1b2c3d", "tax-bureau.2026", "ledger_1@site:a=b,c+d"):
        assert check_kid(kid) == kid


def test_the_writer_refuses_a_kid_with_a_path_separator(tmp_path: Path) -> None:
    """Even a key made without ``generate_key`` cannot be written outside the keys folder."""
    good = generate_key("core-ledger")
    evil = SigningKey("../../outside", "core-ledger", good.alg, dict(good._private_jwk))
    keys_dir = tmp_path / "state" / "keys"
    with pytest.raises(InvalidKid):
        write_private_key(evil, keys_dir)
    assert not (tmp_path / "outside.jwk").exists()
    assert not any(tmp_path.rglob("*.jwk"))


def test_keys_generate_refuses_a_kid_with_a_path_separator(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {**os.environ, "ATTEST_STATE_DIR": str(state),
           "ATTEST_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
           "ATTEST_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "keys", "generate", "--source", "core-ledger",
         "--kid", "../../escaped"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    said = result.stdout + result.stderr
    assert result.returncode != 0, said
    assert "Traceback" not in said and "kid" in said, said
    assert not any(tmp_path.rglob("*.jwk")), said


# -- the state folder and its logs -----------------------------------------------------------


def test_private_folder_and_logs(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)  # noqa: S103 - a folder made before the fix
    assert _mode(private_folder(folder)) == 0o700
    assert _mode(private_folder(folder, traversable=True)) == 0o711
    log = folder / "broker.log"
    log.write_bytes(b"old\n")
    os.chmod(log, 0o644)  # a log from before: tightened when opened
    with open_private_log(log) as out:
        out.write(b"new\n")
    assert log.read_bytes() == b"old\nnew\n"
    assert _mode(log) == 0o600
    assert _mode(touch_private(folder / "postgres.log")) == 0o600
    with open_private_log(folder / "fresh.log"):
        pass
    assert _mode(folder / "fresh.log") == 0o600


def test_the_embedded_stacks_state_folder_and_logs_are_private(stack_settings: Settings) -> None:
    """What `attest dev up` made for this test session (README: 0700/0600)."""
    state = stack_settings.state_dir
    expected = 0o711 if os.geteuid() == 0 else 0o700
    assert _mode(state) == expected, f"{state} is {_mode(state):04o}"
    for name in ("broker.log", "postgres.log"):
        log = state / name
        assert log.exists(), name
        assert _mode(log) & 0o077 == 0, f"{name} is {_mode(log):04o}"


# -- key files others can read ------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o606])
def test_a_producer_key_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    keys_dir = tmp_path / "keys"
    path = write_private_key(generate_key("core-ledger"), keys_dir)
    assert _mode(path) == 0o600
    assert load_private_key(path).source == "core-ledger"
    os.chmod(path, mode)
    with pytest.raises(UnusableKey, match="chmod 600"):
        load_private_key(path)
    with pytest.raises(UnusableKey):
        keys_for_source(keys_dir, "core-ledger")  # what `attest produce` signs with


def test_the_audit_service_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    """The checkpoint-signing service key is loaded the same way."""
    from audit.checkpoints import load_or_create_service_key

    path = tmp_path / "service-key.jwk"
    created = load_or_create_service_key(path)
    assert load_or_create_service_key(path).kid == created.kid
    os.chmod(path, 0o644)
    with pytest.raises(SecurityError):
        load_or_create_service_key(path)


# -- the worker's web endpoint ---------------------------------------------------------------


def test_the_worker_web_endpoint_binds_loopback_unless_configured(tmp_path: Path) -> None:
    from streams.app import build_app

    settings = Settings(state_dir=tmp_path)
    assert settings.worker_web_bind == "127.0.0.1"
    assert build_app(settings, "audit").conf.web_bind == "127.0.0.1"
    exposed = settings.model_copy(update={"worker_web_bind": "0.0.0.0"})  # noqa: S104
    assert build_app(exposed, "audit").conf.web_bind == "0.0.0.0"  # noqa: S104


def test_the_bind_address_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTEST_WORKER_WEB_BIND", "0.0.0.0")  # noqa: S104
    assert Settings().worker_web_bind == "0.0.0.0"  # noqa: S104


# -- a private key is written whole or not at all (issue 15) -------------------------------------


def test_a_failed_write_leaves_no_key_file(tmp_path: Path) -> None:
    """A write that fails half-way (here: the file size limit, as a full disk would) leaves
    neither ``<kid>.jwk`` nor a temporary file behind."""
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    key = generate_key("full-disk")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (16, hard))
    try:
        with pytest.raises(OSError):
            write_private_key(key, keys_dir)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert sorted(p.name for p in keys_dir.iterdir()) == []
    assert keys_for_source(keys_dir, "full-disk") == []
    # ...and once the disk has room, the same key is written whole.
    path = write_private_key(key, keys_dir)
    assert load_private_key(path).kid == key.kid
    assert sorted(p.name for p in keys_dir.iterdir()) == [f"{key.kid}.jwk"]


def test_an_existing_key_file_is_never_overwritten(tmp_path: Path) -> None:
    key = generate_key("core-ledger")
    path = write_private_key(key, tmp_path / "keys")
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        write_private_key(key, tmp_path / "keys")
    assert path.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == [path.name]
    assert _mode(tmp_path / "keys") == 0o700 and _mode(path) == 0o600
