"""Keyring providers: the local file (0600, never overwritten) and environment variables."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from protection.errors import KeyNotHeld, KeyringError
from protection.fields import FieldProtector, writer_protector
from protection.keyring import Keyring
from protection.keyring_sources import (
    ensure_keyring_file,
    keyring_from_environ,
    keyring_path,
    load_keyring_file,
    open_keyring,
    write_keyring_file,
    write_worker_keyring,
)
from protection.tiers import PROTECTED_TIERS, Tier, protection_catalog

DOMAINS = protection_catalog().domains


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_the_keyring_file_is_created_0600_in_a_0700_folder(tmp_path: Path) -> None:
    path = keyring_path(tmp_path / "state")
    keyring, created = ensure_keyring_file(path, DOMAINS)
    assert created
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert isinstance(keyring, Keyring)
    loaded = load_keyring_file(path)
    assert loaded.readable_tiers() == set(PROTECTED_TIERS)
    assert set(loaded.index_keys) == DOMAINS
    secret = loaded.blind_index_key("national_id").material
    assert secret == keyring.blind_index_key("national_id").material
    assert _b64(secret) not in repr(loaded) and _b64(secret) in path.read_text()


def test_an_existing_keyring_is_never_overwritten_but_completed(tmp_path: Path) -> None:
    path = keyring_path(tmp_path)
    first, _ = ensure_keyring_file(path, {"account"})
    with pytest.raises(KeyringError, match="never overwritten"):
        write_keyring_file(first, path)
    again, created = ensure_keyring_file(path, {"account", "national_id"})
    assert not created
    assert again.blind_index_key("account").material == first.blind_index_key("account").material
    assert "national_id" in load_keyring_file(path).index_keys
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_keyring_others_can_read_is_refused(tmp_path: Path) -> None:
    path = keyring_path(tmp_path)
    ensure_keyring_file(path, DOMAINS)
    os.chmod(path, 0o644)
    with pytest.raises(KeyringError, match="chmod 600"):
        load_keyring_file(path)
    with pytest.raises(KeyringError, match="keys init"):
        load_keyring_file(tmp_path / "missing.json")


def test_a_process_loads_only_the_tiers_it_may_read(tmp_path: Path) -> None:
    path = keyring_path(tmp_path)
    ensure_keyring_file(path, DOMAINS)
    reader = load_keyring_file(path, readable={Tier.CONFIDENTIAL})
    assert reader.readable_tiers() == {Tier.CONFIDENTIAL}
    assert reader.tiers[Tier.RESTRICTED][0].private is None
    sealed = reader.seal_to_tier(Tier.RESTRICTED, bytes(32), b"ctx")  # writing needs no private key
    with pytest.raises(KeyNotHeld):
        reader.open_from_tier(Tier.RESTRICTED, sealed, b"ctx")
    write_worker_keyring(tmp_path, load_keyring_file(path))  # what `attest keys init` writes too
    worker = writer_protector(tmp_path, {})
    assert isinstance(worker, FieldProtector)
    assert "readable=none" in repr(worker)


def test_a_tampered_keyring_file_is_refused(tmp_path: Path) -> None:
    path = keyring_path(tmp_path)
    ensure_keyring_file(path, DOMAINS)
    document = json.loads(path.read_text())
    document["tiers"]["restricted"][0]["public"] = _b64(os.urandom(32))
    tampered = tmp_path / "other" / "keyring.json"
    tampered.parent.mkdir(mode=0o700)
    fd = os.open(tampered, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(document, out)
    with pytest.raises(KeyringError, match="does not match"):
        load_keyring_file(tampered)


def test_keys_from_environment_variables() -> None:
    private = X25519PrivateKey.generate()
    raw = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
    public = private.public_key().public_bytes(serialization.Encoding.Raw,
                                               serialization.PublicFormat.Raw)
    index = os.urandom(32)
    reader_env = {"ATTEST_KEK_RESTRICTED": f"v2:{_b64(raw)}",
                  "ATTEST_BLIND_INDEX_NATIONAL_ID": _b64(index)}
    writer_env = {"ATTEST_KEK_PUBLIC_RESTRICTED": f"v2:{_b64(public)}",
                  "ATTEST_BLIND_INDEX_NATIONAL_ID": _b64(index)}
    reader = keyring_from_environ(reader_env)
    writer = open_keyring(Path("/nonexistent"), writer_env)  # the environment wins over the file
    assert reader.readable_tiers() == {Tier.RESTRICTED} and not writer.readable_tiers()
    sealed = writer.seal_to_tier(Tier.RESTRICTED, bytes(range(32)), b"ctx")
    assert reader.open_from_tier(Tier.RESTRICTED, sealed, b"ctx") == bytes(range(32))
    assert writer.current_version(Tier.RESTRICTED) == 2
    assert reader.blind_index_key("national_id").material == index
    assert not keyring_from_environ(reader_env, readable=()).readable_tiers()
    with pytest.raises(KeyNotHeld):
        writer.current_version(Tier.INTERNAL)
    with pytest.raises(KeyringError):
        keyring_from_environ({"ATTEST_KEK_INTERNAL": "not-versioned"})
    with pytest.raises(KeyringError):
        keyring_from_environ({"ATTEST_KEK_INTERNAL": "v1:!!!"})
