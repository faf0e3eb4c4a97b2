"""Key files per process: the worker's keyring opens nothing it stored, and a private one is refused."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from sqlalchemy import text

from access.issuer import jwks_path, signing_key_path
from access.keys import ensure_local_keys, service_key_path
from access.policy import AccessDecision, AccessReason
from protection.errors import KeyNotHeld, KeyringError
from protection.fields import writer_protector
from protection.keyring_sources import (
    keyring_path,
    load_keyring_file,
    open_writer_keyring,
    worker_keyring_path,
)
from protection.reader import FieldReader
from protection.tiers import PROTECTED_TIERS, protection_catalog
from schemas.catalog import DOCUMENT_V1
from storage.db import engine_for
from storage.protected import load_key_records
from tests.access.conftest import AccessWorld


def test_keys_init_writes_one_private_file_per_process(tmp_path: Path) -> None:
    made = ensure_local_keys(tmp_path)
    assert made.keyring_created and made.issuer_created and made.service_key_created
    for path in (keyring_path(tmp_path), worker_keyring_path(tmp_path), signing_key_path(tmp_path),
                 service_key_path(tmp_path)):
        assert path.stat().st_mode & 0o777 == 0o600, path
    worker = json.loads(worker_keyring_path(tmp_path).read_text())
    assert not any("private" in v for versions in worker["tiers"].values() for v in versions)
    assert set(worker["blind_index"]) == set(protection_catalog().domains)
    service = load_keyring_file(keyring_path(tmp_path))
    assert service.readable_tiers() == set(PROTECTED_TIERS)
    assert '"d"' not in jwks_path(tmp_path).read_text()
    again = ensure_local_keys(tmp_path)  # idempotent: nothing is replaced
    assert not (again.keyring_created or again.issuer_created or again.service_key_created)


def test_the_worker_refuses_a_keyring_with_any_private_tier_key(tmp_path: Path) -> None:
    ensure_local_keys(tmp_path)
    assert not writer_protector(tmp_path, {})._keyring.readable_tiers()
    # The service's keyring put where the worker's belongs:
    worker_keyring_path(tmp_path).unlink()
    worker_keyring_path(tmp_path).write_bytes(keyring_path(tmp_path).read_bytes())
    worker_keyring_path(tmp_path).chmod(0o600)
    with pytest.raises(KeyringError, match="private tier keys"):
        writer_protector(tmp_path, {})
    # ...or private keys in the environment.
    raw = base64.urlsafe_b64encode(bytes(range(32))).rstrip(b"=").decode()
    with pytest.raises(KeyringError, match="private tier keys"):
        open_writer_keyring(tmp_path, {"ATTEST_KEK_RESTRICTED": f"v1:{raw}"})


def test_the_workers_keyring_opens_no_stored_field(world: AccessWorld) -> None:
    """Every stored ciphertext, read straight from the table: the worker's keyring opens none."""
    worker = open_writer_keyring(world.state, {})
    catalog = protection_catalog()
    schema = catalog.schema(DOCUMENT_V1)
    columns = [f.name for f in schema.protected_fields]
    with engine_for(world.url).connect() as conn:
        rows = conn.execute(text(f"SELECT event_id::text, {', '.join(columns)}, "  # noqa: S608
                                 "department FROM document_fields")).all()
    assert len(rows) == len(world.docs)
    ciphertexts = [{c: bytes(v) for c, v in zip(columns, row[1:-1], strict=True) if v is not None}
                   for row in rows]
    keys = load_key_records(world.url, FieldReader.key_ids(
        c for fields in ciphertexts for c in fields.values()))
    reader = FieldReader(worker, catalog)
    tried = 0
    for row, fields in zip(rows, ciphertexts, strict=True):
        for name, ciphertext in fields.items():
            allow = {name: AccessDecision(schema.field(name), "attacker", True,
                                          AccessReason.GRANTED, 1)}
            with pytest.raises(KeyNotHeld):
                reader.open_fields(DOCUMENT_V1, row[0], {name: ciphertext}, allow, keys,
                                   department=row[-1])
            tried += 1
    assert tried >= 4 * len(rows)  # at least document_id, title, body and one agency field each
    # The service's keyring opens the same fields (so the failure above is the keys, not the data).
    service = FieldReader(world.service._keyring, catalog)
    name, ciphertext = next(iter(ciphertexts[0].items()))
    allow = {name: AccessDecision(schema.field(name), "service", True, AccessReason.GRANTED, 1)}
    assert service.open_fields(DOCUMENT_V1, rows[0][0], {name: ciphertext}, allow, keys,
                               department=rows[0][-1])[name].value
