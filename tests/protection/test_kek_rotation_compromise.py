"""KEK rotation after a compromise (issue 14, item 8), against the real embedded Postgres and broker.

The attacker of these tests stole a tier's key-encryption key (its private key, version 1)
and, with it, every wrapping key sealed to it that the database held at the time. After
``rotate-kek`` neither opens anything stored: the wrapping keys are new and sealed to v2,
every data key is wrapped by one of them, and the old ones are gone. Every field still opens
with the rotated keyring, even once v1 is retired; a running worker seals under v2 from its
next batch without a restart.
"""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
from sqlalchemy import select, text
from typer.testing import CliRunner

from access.policy import AccessDecision, AccessReason
from cli import crypto_keys
from config.settings import Settings
from devstack.processes import choose_port, terminate_tree
from operations import kek_rotation
from operations.kek_rotation import rotate_kek
from protection import envelope
from protection.errors import FieldIntegrityError, KeyNotHeld
from protection.fields import FieldProtector, writer_protector
from protection.keyring import StaticKeyring
from protection.keyring_sources import (
    ensure_process_keyrings,
    keyring_path,
    load_keyring_file,
    open_keyring,
    open_writer_keyring,
    worker_keyring_path,
    write_keyring_file,
    write_worker_keyring,
)
from protection.reader import FieldReader
from protection.rotation import open_wrapping_key
from protection.tiers import Tier, protection_catalog
from scenarios.finance import transaction_payloads
from scenarios.government import document_payloads, people
from schemas.audit import AuditRecord, records_in
from schemas.catalog import DOCUMENT_V1, TRANSACTION_V1
from security.keyfiles import generate_key
from storage import keys as registry
from storage.db import engine_for
from storage.events import count_events, store_events
from storage.models import EventRow
from storage.protected import load_key_records
from storage.protected_models import FIELD_TABLES
from streams.admin import ensure_topics
from streams.producer import OutgoingMessage, send_all, sign_payload
from streams.topics import AUDIT, TRANSACTIONS
from tests.support.databases import scratch_database
from tests.support.events import stored_events
from tests.support.topics import read_topic
from tests.support.waiting import wait_until
from tests.support.workers import launch, settings_env, wait_for_http

CATALOG = protection_catalog()
RUNNER = CliRunner()


# -- helpers ----------------------------------------------------------------------------------


def _own_settings(stack_settings: Settings, state: Path, url: str) -> Settings:
    tag = uuid.uuid4().hex[:6]
    return stack_settings.model_copy(update={
        "state_dir": state, "database_url": url, "topic_prefix": f"k{tag}.",
        "app_id": f"attest-kek-{tag}", "partitions": 1})


def _open_everything(url: str, keyring: StaticKeyring) -> dict[str, dict[str, Any]]:
    """Every protected field of every stored event, opened through ``FieldReader``."""
    reader = FieldReader(keyring)
    out: dict[str, dict[str, Any]] = {}
    for schema in CATALOG.schemas.values():
        table = FIELD_TABLES[schema.table]
        names = [f.name for f in schema.protected_fields]
        decisions = {f.name: AccessDecision(f, "rotation-test", True, AccessReason.GRANTED)
                     for f in schema.protected_fields}
        with engine_for(url).connect() as conn:
            rows = conn.execute(
                select(table.c.event_id, table.c.department, *(table.c[n] for n in names))
                .join(EventRow, EventRow.event_id == table.c.event_id)
                .where(EventRow.typ == schema.typ)).all()
        for row in rows:
            ciphertexts = {n: None if row._mapping[n] is None else bytes(row._mapping[n])
                           for n in names}
            keys = load_key_records(url, FieldReader.key_ids(ciphertexts.values()))
            opened = reader.open_fields(schema.typ, str(row.event_id), ciphertexts, decisions,
                                        keys, department=row.department)
            out[str(row.event_id)] = {n: r.value for n, r in opened.items()}
    return out


def _wrapping_rows(url: str, tier: Tier) -> list[tuple[uuid.UUID, int, bytes]]:
    with engine_for(url).connect() as conn:
        return [(r[0], int(r[1]), bytes(r[2])) for r in conn.execute(
            text("SELECT id, kek_version, sealed FROM tier_wrapping_keys WHERE tier = :t"),
            {"t": tier.label})]


def _live_data_keys(url: str, tier: Tier) -> list[tuple[uuid.UUID, uuid.UUID, bytes, bytes]]:
    with engine_for(url).connect() as conn:
        return [(r[0], r[1], bytes(r[2]), bytes(r[3])) for r in conn.execute(
            text("SELECT id, wrapping_key_id, subject_ref, wrapped FROM data_keys "
                 "WHERE tier = :t AND destroyed_at IS NULL"), {"t": tier.label})]


def _audit(settings: Settings, action: str) -> list[AuditRecord]:
    """The records of ``action`` on the audit topic (operator tools publish them there)."""
    return [r for m in read_topic(settings, AUDIT.name(settings)) for r in records_in(m.value())
            if r.action == action]


def _private(keyring: StaticKeyring, tier: Tier, version: int) -> Any:
    return next(v.private for v in keyring.tiers[tier] if v.version == version)


# -- without a database: the worker's keyring refresh ------------------------------------------


def test_a_protector_picks_up_a_rotated_keyring_on_its_timer(tmp_path: Path) -> None:
    ensure_process_keyrings(tmp_path, CATALOG.domains)
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    protector = FieldProtector(open_writer_keyring(tmp_path, {}), clock=lambda: now[0],
                               reload=lambda: open_writer_keyring(tmp_path, {}),
                               reload_every=timedelta(seconds=30))

    def new_subject_batch() -> dict[Tier, int]:
        payload = transaction_payloads(1, "core-ledger", seed=uuid.uuid4().int)[0]
        batch = protector.seal_batch(stored_events([payload], TRANSACTION_V1), 0)
        protector.confirm_stored(batch)
        return {w.tier: w.kek_version for w in batch.wrapping_keys}

    assert new_subject_batch()[Tier.CONFIDENTIAL] == 1
    full = load_keyring_file(keyring_path(tmp_path))
    rotated = full.with_new_version(Tier.CONFIDENTIAL)
    write_keyring_file(rotated, keyring_path(tmp_path), replace=True)
    write_worker_keyring(tmp_path, rotated)

    now[0] += timedelta(seconds=10)  # not due: the wrapping key in hand is still used
    assert Tier.CONFIDENTIAL not in new_subject_batch()
    now[0] += timedelta(seconds=25)  # due: the file is re-read and v2 gets a new wrapping key
    assert new_subject_batch() == {Tier.CONFIDENTIAL: 2}
    # A keyring that cannot be read keeps the one in memory; the worker goes on sealing.
    worker_keyring_path(tmp_path).write_text("not json")
    os.chmod(worker_keyring_path(tmp_path), 0o600)
    now[0] += timedelta(seconds=31)
    assert new_subject_batch() == {}


def test_a_moved_epoch_makes_the_protector_mint_a_new_wrapping_key(tmp_path: Path) -> None:
    """A rotation deletes old wrapping keys after advancing the epoch: no writer may keep
    wrapping data keys under one it cached."""
    ensure_process_keyrings(tmp_path, CATALOG.domains)
    protector = writer_protector(tmp_path, {})
    payloads = transaction_payloads(2, "core-ledger", seed=uuid.uuid4().int)
    first = protector.seal_batch(stored_events(payloads[:1], TRANSACTION_V1), 4)
    protector.confirm_stored(first)
    second = protector.seal_batch(stored_events(payloads[1:], TRANSACTION_V1), 5)
    old = {w.tier: w.key_id for w in first.wrapping_keys}
    new = {w.tier: w.key_id for w in second.wrapping_keys}
    assert set(new) == set(old) and not set(new.values()) & set(old.values())


def test_any_protector_of_the_workers_keyring_file_re_reads_it(tmp_path: Path) -> None:
    """The enrichment stage seals labels with a protector of its own: it must follow a
    rotation as intake's does (the epoch moves, the file is re-read)."""
    ensure_process_keyrings(tmp_path, CATALOG.domains)
    protector = FieldProtector(open_writer_keyring(tmp_path, {}))
    payloads = transaction_payloads(2, "core-ledger", seed=uuid.uuid4().int)
    first = protector.seal_batch(stored_events(payloads[:1], TRANSACTION_V1), 0)
    protector.confirm_stored(first)
    rotated = load_keyring_file(keyring_path(tmp_path)).with_new_version(Tier.CONFIDENTIAL)
    write_keyring_file(rotated, keyring_path(tmp_path), replace=True)
    write_worker_keyring(tmp_path, rotated)
    second = protector.seal_batch(stored_events(payloads[1:], TRANSACTION_V1), 1)
    assert {w.tier: w.kek_version for w in second.wrapping_keys}[Tier.CONFIDENTIAL] == 2
    # A derived copy (like keys from the environment) cannot change: nothing to re-read.
    assert FieldProtector(open_writer_keyring(tmp_path, {}).restricted_to(()))._reload is None


def test_a_running_service_opens_keys_sealed_to_a_version_written_after_it_started(
    tmp_path: Path
) -> None:
    ensure_process_keyrings(tmp_path, CATALOG.domains)
    service = open_keyring(tmp_path, {})  # what `attest serve` holds from its start
    rotated = load_keyring_file(keyring_path(tmp_path)).with_new_version(Tier.RESTRICTED)
    write_keyring_file(rotated, keyring_path(tmp_path), replace=True)
    secret, context = os.urandom(32), b"attest.test-context"
    sealed = rotated.seal_to_tier(Tier.RESTRICTED, secret, context)
    assert service.open_from_tier(Tier.RESTRICTED, sealed, context) == secret
    assert service.current_version(Tier.RESTRICTED) == 2
    # A version the file does not have either is still refused (no endless re-reading).
    future = rotated.with_new_version(Tier.RESTRICTED)
    with pytest.raises(KeyNotHeld):
        service.open_from_tier(Tier.RESTRICTED, future.seal_to_tier(Tier.RESTRICTED, secret, context),
                               context)


# -- against the database ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def own(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A state folder (its keyrings) and a database of this module's own: rotation re-wraps
    every data key of a tier it finds."""
    with scratch_database(stack_settings.database_url, "attest_kek") as url:
        settings = _own_settings(stack_settings, tmp_path_factory.mktemp("kek-state"), url)
        ensure_topics(settings)
        ensure_process_keyrings(settings.state_dir, CATALOG.domains)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(crypto_keys, "get_settings", lambda: settings)
            yield settings


@pytest.fixture(scope="module")
def app(own: Settings) -> typer.Typer:
    cli = typer.Typer()
    cli.command("rotate-kek")(crypto_keys.rotate_kek)
    cli.command("retire-kek")(crypto_keys.retire_kek)
    return cli


@pytest.mark.integration
def test_a_stolen_old_kek_opens_nothing_after_rotation(own: Settings) -> None:
    url, tier = own.database_url, Tier.RESTRICTED
    population = people(3, seed=uuid.uuid4().int)
    docs = document_payloads(6, seed=uuid.uuid4().int, population=population)
    store_events(url, stored_events(docs, DOCUMENT_V1), protector=writer_protector(own.state_dir, {}))
    payments = transaction_payloads(5, "core-ledger", seed=uuid.uuid4().int)
    store_events(url, stored_events(payments, TRANSACTION_V1),
                 protector=writer_protector(own.state_dir, {}))
    stolen_keyring = load_keyring_file(keyring_path(own.state_dir))
    assert stolen_keyring.current_version(tier) == 1
    # The theft: v1's private key, and with it every wrapping key the database holds now.
    stolen = {key_id: open_wrapping_key(stolen_keyring, record)
              for key_id, record in load_key_records(
                  url, [k[0] for k in _live_data_keys(url, tier)]).wrapping_keys.items()}
    assert stolen
    before = _open_everything(url, stolen_keyring)
    running_service = open_keyring(own.state_dir, {})  # started before the rotation
    with engine_for(url).connect() as conn:
        fields_before = sorted(bytes(r[0]) for r in conn.execute(
            text("SELECT account FROM transaction_fields")))

    moved: list[tuple[int, int]] = []
    done = rotate_kek(own, "restricted", "operator:test", batch_size=2,
                      progress=lambda n, total: moved.append((n, total)))
    assert (done.before, done.after) == (1, 2)
    live = _live_data_keys(url, tier)
    assert done.moved == len(live) >= 5 and moved[-1] == (len(live), len(live))
    assert len(moved) == -(-len(live) // 2)  # one transaction per batch of 2
    assert done.deleted == len(stolen)

    # No wrapping key sealed to v1 is left, and v1's private key opens none of the new ones.
    rows = _wrapping_rows(url, tier)
    assert rows and {version for _, version, _ in rows} == {2}
    old_private = _private(stolen_keyring, tier, 1)
    for key_id, _, sealed in rows:
        with pytest.raises(FieldIntegrityError):
            envelope.open_from_tier(old_private, tier, sealed,
                                    envelope.wrapping_key_context(key_id, tier))
        with pytest.raises(KeyNotHeld):
            stolen_keyring.open_from_tier(tier, sealed, envelope.wrapping_key_context(key_id, tier))
    # No data key is wrapped by a stolen wrapping key, and none unwraps with any of them.
    assert not {wrapping_id for _, wrapping_id, _, _ in live} & set(stolen)
    for key_id, _, subject_ref, wrapped in live:
        for old_key in stolen.values():
            with pytest.raises(FieldIntegrityError):
                envelope.unwrap_data_key(old_key, key_id, tier, subject_ref, wrapped)

    # Field ciphertexts did not change, and every field opens with the rotated keyring.
    with engine_for(url).connect() as conn:
        assert sorted(bytes(r[0]) for r in conn.execute(
            text("SELECT account FROM transaction_fields"))) == fields_before
    rotated = load_keyring_file(keyring_path(own.state_dir))
    assert rotated.versions(tier) == (1, 2)
    newest_only = rotated.without_version(tier, 1)
    assert _open_everything(url, newest_only) == before
    assert _open_everything(url, running_service) == before  # no restart needed
    assert any(r.detail["tier"] == "restricted" and r.detail["to_version"] == 2
               and r.detail["new_wrapping_keys"] for r in _audit(own, "key.rotated"))


@pytest.mark.integration
def test_retire_refuses_while_a_version_is_needed_and_removes_it_after(
    own: Settings, app: typer.Typer
) -> None:
    url, tier = own.database_url, Tier.CONFIDENTIAL
    start = load_keyring_file(keyring_path(own.state_dir)).current_version(tier)
    # A writer that is never told about the rotation (keys from the environment, say).
    stale_writer = FieldProtector(open_writer_keyring(own.state_dir, {}).restricted_to(()))
    payments = transaction_payloads(6, "core-ledger", seed=uuid.uuid4().int)
    store_events(url, stored_events(payments[:3], TRANSACTION_V1), protector=stale_writer)

    # Ctrl-C after its first batch: one data key moved, the rest still under v<start>.
    real_move, batches = kek_rotation.move_data_keys, []

    def interrupted_after_one(*args: Any, **kwargs: Any) -> int:
        if batches:
            raise KeyboardInterrupt
        batches.append(real_move(*args, **kwargs))
        return batches[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kek_rotation, "move_data_keys", interrupted_after_one)
        cut = RUNNER.invoke(app, ["rotate-kek", "--tier", "confidential", "--batch-size", "1"])
    assert cut.exit_code == 130 and "--resume" in cut.output and batches == [1]
    target = start + 1
    assert load_keyring_file(keyring_path(own.state_dir)).current_version(tier) == target
    assert start in {v for _, v, _ in _wrapping_rows(url, tier)}

    result = RUNNER.invoke(app, ["retire-kek", "--tier", "confidential", "--version", str(start)])
    assert result.exit_code == 13, result.output
    assert "still sealed to" in result.output and "--resume" in result.output
    assert start in load_keyring_file(keyring_path(own.state_dir)).versions(tier)
    current = RUNNER.invoke(app, ["retire-kek", "--tier", "confidential", "--version", str(target)])
    assert current.exit_code == 1 and "current version" in current.output

    # The stale writer goes on sealing to the old version; resume moves that too.
    store_events(url, stored_events(payments[3:], TRANSACTION_V1), protector=stale_writer)
    resumed = RUNNER.invoke(app, ["rotate-kek", "--tier", "confidential", "--resume",
                                  "--batch-size", "2"])
    assert resumed.exit_code == 0, resumed.output
    assert f"continued at v{target}" in resumed.output
    assert load_keyring_file(keyring_path(own.state_dir)).current_version(tier) == target
    assert {v for _, v, _ in _wrapping_rows(url, tier)} == {target}

    retired = RUNNER.invoke(app, ["retire-kek", "--tier", "confidential", "--version", str(start)])
    assert retired.exit_code == 0, retired.output
    for path in (keyring_path(own.state_dir), worker_keyring_path(own.state_dir)):
        assert start not in load_keyring_file(path).versions(tier)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not list(own.state_dir.glob(".*.tmp"))
    opened = _open_everything(url, load_keyring_file(keyring_path(own.state_dir)))
    for p in payments:
        assert opened[p["event_id"]]["amount"] == p["amount"]
    again = RUNNER.invoke(app, ["retire-kek", "--tier", "confidential", "--version", str(start)])
    assert again.exit_code == 1 and "has no confidential" in again.output


@pytest.mark.integration
def test_rotation_and_retirement_refuse_when_busy_or_unaudited(
    own: Settings, monkeypatch: pytest.MonkeyPatch, app: typer.Typer
) -> None:
    from streams.errors import BrokerUnavailable

    before = load_keyring_file(keyring_path(own.state_dir))

    def down(settings: Settings, records: list[Any]) -> None:
        raise BrokerUnavailable("the broker is down")

    with kek_rotation.keyring_lock(own.state_dir):  # another rotation is running
        busy = RUNNER.invoke(app, ["rotate-kek", "--tier", "internal"])
        assert busy.exit_code == 1 and "another rotate-kek or retire-kek" in busy.output
        busy = RUNNER.invoke(app, ["retire-kek", "--tier", "internal", "--version", "1"])
        assert busy.exit_code == 1 and "another rotate-kek or retire-kek" in busy.output

    monkeypatch.setattr(kek_rotation, "publish_audit", down)
    result = RUNNER.invoke(app, ["rotate-kek", "--tier", "internal"])
    assert result.exit_code == 10 and "nothing was changed" in result.output
    after = load_keyring_file(keyring_path(own.state_dir))
    assert after.versions(Tier.INTERNAL) == before.versions(Tier.INTERNAL)


# -- a running worker ---------------------------------------------------------------------------


@pytest.mark.integration
def test_a_running_worker_seals_under_the_new_version_without_a_restart(
    stack_settings: Settings, tmp_path: Path
) -> None:
    tier = Tier.CONFIDENTIAL
    with scratch_database(stack_settings.database_url, "attest_kek_worker") as url:
        settings = _own_settings(stack_settings, tmp_path / "state", url)
        ensure_topics(settings)
        ensure_process_keyrings(settings.state_dir, CATALOG.domains)
        key = generate_key(f"ledger-{uuid.uuid4().hex[:6]}")
        registry.add_key(url, key.kid, key.source, key.alg, key.public_jwk)
        # The intake stage alone: it is the one that seals and stores (no model, no matcher).
        port = choose_port(0)
        proc = launch(["worker", "--role", "intake"],
                      settings_env(settings, {"ATTEST_WORKER_WEB_PORT": str(port)}),
                      tmp_path / "worker.log")

        def send(payloads: list[dict[str, Any]]) -> None:
            send_all(settings, TRANSACTIONS.name(settings), [
                OutgoingMessage(None, sign_payload(key, p, TRANSACTION_V1)) for p in payloads])
            ids = [p["event_id"] for p in payloads]
            stored = wait_until(lambda: count_events(url, ids), lambda n: n == len(ids), 120)
            assert stored == len(ids), (tmp_path / "worker.log").read_text()[-3000:]

        try:
            wait_for_http(proc, f"http://127.0.0.1:{port}/health", tmp_path / "worker.log")
            first = transaction_payloads(3, key.source, seed=uuid.uuid4().int)
            send(first)
            wrapping_before = {k for k, _, _ in _wrapping_rows(url, tier)}
            assert {v for _, v, _ in _wrapping_rows(url, tier)} == {1}

            done = rotate_kek(settings, "confidential", "operator:test")
            assert done.after == 2
            # New subjects (new data keys) and the first ones again (data keys it cached).
            later = transaction_payloads(3, key.source, seed=uuid.uuid4().int)
            again = transaction_payloads(2, key.source, seed=uuid.uuid4().int)
            for payload, old in zip(again, first, strict=False):
                payload["account"] = old["account"]
            send(later + again)
            assert proc.poll() is None  # the same process, never restarted

            keyring = load_keyring_file(keyring_path(settings.state_dir))
            with engine_for(url).connect() as conn:
                amounts = {str(r[0]): bytes(r[1]) for r in conn.execute(
                    text("SELECT event_id, amount FROM transaction_fields"))}
            new_keys = {envelope.field_key_ref(amounts[p["event_id"]]).key_id for p in later}
            records = load_key_records(url, new_keys)
            used = {d.wrapping_key_id for d in records.data_keys.values()}
            # Wrapping keys the worker minted after the rotation, sealed to v2.
            assert used and not used & wrapping_before
            assert {records.wrapping_keys[w].kek_version for w in used} == {2}
            assert {v for _, v, _ in _wrapping_rows(url, tier)} == {2}
            opened = _open_everything(url, keyring.without_version(tier, 1))
            for p in first + later + again:
                assert opened[p["event_id"]]["amount"] == p["amount"]
        finally:
            terminate_tree(proc.pid, timeout_s=15)
            proc.wait(timeout=5)


@pytest.mark.integration
def test_a_data_key_altered_in_the_database_stops_the_rotation_and_resume_continues(
    own: Settings, app: typer.Typer
) -> None:
    url, tier = own.database_url, Tier.INTERNAL
    payments = transaction_payloads(4, "core-ledger", seed=uuid.uuid4().int)
    store_events(url, stored_events(payments, TRANSACTION_V1),
                 protector=writer_protector(own.state_dir, {}))
    victim, _, _, wrapped = max(_live_data_keys(url, tier))  # the last one a batch reaches
    altered = wrapped[:-1] + bytes([wrapped[-1] ^ 1])
    with engine_for(url).begin() as conn:
        conn.execute(text("UPDATE data_keys SET wrapped = :w WHERE id = :i"),
                     {"w": altered, "i": victim})
    result = RUNNER.invoke(app, ["rotate-kek", "--tier", "internal", "--batch-size", "1"])
    assert result.exit_code == 1 and f"data key {victim} failed authentication" in result.output
    target = load_keyring_file(keyring_path(own.state_dir)).current_version(tier)
    by_key = {k: w for k, w, _, _ in _live_data_keys(url, tier)}
    old_versions = {k: v for k, v, _ in _wrapping_rows(url, tier)}
    assert old_versions[by_key[victim]] < target  # not moved, its wrapping key kept
    assert sum(old_versions[w] == target for w in by_key.values()) == len(by_key) - 1

    with engine_for(url).begin() as conn:  # restored from a backup
        conn.execute(text("UPDATE data_keys SET wrapped = :w WHERE id = :i"),
                     {"w": wrapped, "i": victim})
    resumed = RUNNER.invoke(app, ["rotate-kek", "--tier", "internal", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert {v for _, v, _ in _wrapping_rows(url, tier)} == {target}
