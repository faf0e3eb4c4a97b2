"""``attest forget`` removes the subject from the matchers' pending state (``recon_state``).

Real Postgres: a stage stores pending state holding two subjects; forgetting one leaves the
state, opened with the key the worker uses, without it and with the other; the worker, still
holding the old state in memory, reloads instead of writing it back.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

import operations.forgetting as forgetting
from agents.messages import IncomingMessage
from agents.reconciliation import ConsistencyStage, ReconciliationStage
from protection.fields import subject_reference
from protection.keyring import generate_keyring
from protection.tiers import protection_catalog
from reconcile.government import SOCIAL_SECURITY, TAX_BUREAU, readable_from_policy
from reconcile.sealing import StateKey
from scenarios.finance import transaction_payloads
from scenarios.government import consistency_scenario
from schemas.audit import AuditAction
from schemas.catalog import DOCUMENT_V1, TRANSACTION_V1
from security.verification import VerifiedEvent
from storage.key_maintenance import forget_subject
from storage.reconciliation import StaleState, load_state, save_step
from tests.support.databases import scratch_database

pytestmark = pytest.mark.integration
NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
KEYRING = generate_keyring(protection_catalog().domains)


def _pairs(payloads, typ, start=0):
    return [(IncomingMessage("t", 0, start + i, None, b"", NOW),
             VerifiedEvent(p["event_id"], p["source"], "kid", "Ed25519", typ, NOW, p))
            for i, p in enumerate(payloads)]


def _opened(url: str, name: str, domain: str) -> tuple[dict, int]:
    """The stored state, opened as the worker opens it."""
    sealed, version = load_state(url, name)
    key = StateKey.derive(KEYRING.blind_index_key(domain).material)
    return json.loads(key.open(sealed, f"recon_state|{name}".encode())), version


def _forget(url: str, domain: str, subject: str):
    refs = {domain: subject_reference(KEYRING, domain, subject)}
    seen = []
    outcome = forget_subject(url, refs, protection_catalog(), before_commit=seen.append,
                             pending_state=forgetting.pending_state_filter(KEYRING, refs))
    assert seen == [outcome]  # the audit hook sees the count before commit
    return outcome


def _digits(nid: str) -> str:
    return "".join(c for c in nid if c.isdigit())


def _finance_records(state: dict) -> list[dict]:
    return [r for sides in state["pools"].values() for side in ("left", "right") for r in sides[side]]


async def test_forget_removes_an_account_from_the_finance_state(stack_settings, database_url):
    mine, other, later = transaction_payloads(3, "core-ledger", seed=uuid.uuid4().int % 10**6, now=NOW)
    accounts = {"mine": f"DE{uuid.uuid4().int % 10**20:020d}", "other": f"DE{uuid.uuid4().int % 10**20:020d}"}
    mine["account"], other["account"] = accounts["mine"], accounts["other"]
    later["account"] = accounts["other"]
    mine_index = subject_reference(KEYRING, "account", accounts["mine"]).hex()
    other_index = subject_reference(KEYRING, "account", accounts["other"]).hex()
    with scratch_database(database_url, "recon_forget") as url:
        settings = stack_settings.model_copy(update={"database_url": url})
        stage = ReconciliationStage(settings, "worker:test", KEYRING.blind_index_key("account"))
        await stage.process(_pairs([mine, other], TRANSACTION_V1))  # the ledger alone: both wait
        before, version = _opened(url, "finance", "account")
        assert {r["account_key"] for r in _finance_records(before)} == {mine_index, other_index}

        outcome = _forget(url, "account", accounts["mine"])

        assert outcome.recon_pending == 1
        after, new_version = _opened(url, "finance", "account")
        assert new_version == version + 1
        records = _finance_records(after)
        assert {r["account_key"] for r in records} == {other_index}
        assert mine["reference"] not in json.dumps(after)
        assert mine["event_id"] in dict(after["seen"])  # an id only: a redelivery stays out

        # The running worker still holds the old state in memory. Its next step (with the
        # forgotten record delivered again) fails its version check, reloads, and stores a
        # state without the subject.
        assert stage.reconciler is not None and mine["event_id"] in stage.reconciler.pending()
        await stage.process(_pairs([later, mine], TRANSACTION_V1, start=2))
        final, _ = _opened(url, "finance", "account")
        ids = {r["record_id"] for r in _finance_records(final)}
        assert ids == {other["event_id"], later["event_id"]}
        assert mine["reference"] not in json.dumps(final)
        assert mine["event_id"] not in stage.reconciler.pending()

        # Forgetting again finds nothing and leaves the state (and its version) alone.
        _, version = _opened(url, "finance", "account")
        assert _forget(url, "account", accounts["mine"]).recon_pending == 0
        assert _opened(url, "finance", "account")[1] == version


async def test_forget_removes_a_person_from_the_government_state(stack_settings, database_url):
    payloads, _ = consistency_scenario(4, seed=uuid.uuid4().int % 10**6, rate=0.0, now=NOW)
    tax = [p for p in payloads if p["agency"] == TAX_BUREAU]
    social = [p for p in payloads if p["agency"] == SOCIAL_SECURITY]
    mine, other = tax[0], tax[1]
    other_social = next(p for p in social if _digits(p["subject_id"]) == _digits(other["subject_id"]))
    mine_index = subject_reference(KEYRING, "national_id", mine["subject_id"]).hex()
    other_index = subject_reference(KEYRING, "national_id", other["subject_id"]).hex()
    with scratch_database(database_url, "gov_forget") as url:
        settings = stack_settings.model_copy(update={"database_url": url})
        stage = ConsistencyStage(settings, "worker:test", KEYRING.blind_index_key("national_id"),
                                 readable_from_policy("government"))
        await stage.process(_pairs([mine, other], DOCUMENT_V1))
        before, _ = _opened(url, "government", "national_id")
        assert set(before["pending"]) == {mine_index, other_index}
        assert before["pending"][mine_index][TAX_BUREAU]["income"] == str(mine["income"])

        outcome = _forget(url, "national_id", mine["subject_id"])

        assert outcome.recon_pending == 1
        after, _ = _opened(url, "government", "national_id")
        assert set(after["pending"]) == {other_index}
        assert set(after["since"]) == {other_index}

        # The stale worker: the other person's second document arrives, with the forgotten
        # person's document again; the other person is checked and leaves the state, and the
        # forgotten person does not come back.
        assert mine_index in stage.pending
        await stage.process(_pairs([other_social, mine], DOCUMENT_V1, start=2))
        final, _ = _opened(url, "government", "national_id")
        assert final["pending"] == {} and mine_index not in final["since"]
        assert mine_index not in stage.pending


async def test_shred_subject_audits_the_count_and_no_identifier(stack_settings, database_url, monkeypatch):
    payload, = transaction_payloads(1, "payment-switch", seed=uuid.uuid4().int % 10**6, now=NOW)
    account = payload["account"]
    with scratch_database(database_url, "recon_forget_cli") as url:
        settings = stack_settings.model_copy(update={"database_url": url})
        stage = ReconciliationStage(settings, "worker:test", KEYRING.blind_index_key("account"))
        await stage.process(_pairs([payload], TRANSACTION_V1))
        published = []
        monkeypatch.setattr(forgetting, "open_index_keyring", lambda *a: KEYRING)
        monkeypatch.setattr(forgetting, "publish_audit", lambda s, records: published.extend(records))
        done = forgetting.shred_subject(settings, account, "erasure request", ["account"], "op:test",
                                        confirm=lambda domains: None)
        assert done.outcome.recon_pending == 1
        record, = published
        assert record.action == AuditAction.SUBJECT_FORGOTTEN
        assert record.detail["recon_pending_removed"] == 1
        text = json.dumps(record.detail)
        assert payload["event_id"] not in text and payload["reference"] not in text
        assert subject_reference(KEYRING, "account", account).hex() not in text
        state, _ = _opened(url, "finance", "account")
        assert _finance_records(state) == []


def test_a_state_written_since_it_was_loaded_is_not_overwritten(database_url):
    with scratch_database(database_url, "recon_stale") as url:
        save_step(url, "finance", b"one", 1, [], [])
        save_step(url, "finance", b"two", 2, [], [])
        save_step(url, "finance", b"two", 2, [], [])  # a retry of a commit whose answer was lost
        with pytest.raises(StaleState):
            save_step(url, "finance", b"old", 2, [], [])  # loaded at 1, someone wrote 2 since
        assert load_state(url, "finance") == (b"two", 2)


async def test_forget_clears_the_sealed_amounts_of_the_subjects_matches_and_breaks(
        stack_settings, database_url):
    from protection.fields import FieldProtector
    from storage.events import store_events
    from storage.reconciliation import list_breaks, list_matches
    from tests.support.events import stored_events

    lonely, paid, other = transaction_payloads(3, "core-ledger", seed=uuid.uuid4().int % 10**6, now=NOW)
    account = f"DE{uuid.uuid4().int % 10**20:020d}"
    lonely["account"] = paid["account"] = account
    switch = {**paid, "event_id": str(uuid.uuid4()), "source": "payment-switch"}
    with scratch_database(database_url, "recon_forget_rows") as url:
        settings = stack_settings.model_copy(update={"database_url": url})
        payloads = [lonely, paid, switch, other]
        store_events(url, stored_events(payloads, TRANSACTION_V1),
                     protector=FieldProtector(KEYRING.restricted_to(())))
        stage = ReconciliationStage(settings, "worker:test", KEYRING.blind_index_key("account"))
        await stage.process(_pairs(payloads, TRANSACTION_V1))
        await stage.flush()
        mine = {lonely["event_id"], paid["event_id"], switch["event_id"]}
        match, = [m for m in list_matches(url) if set(m.left_ids) | set(m.right_ids) <= mine]
        assert match.difference_sealed is not None
        assert all(b.amount_sealed is not None for b in list_breaks(url))
        assert any(b.record_id == other["event_id"] for b in list_breaks(url))

        outcome = _forget(url, "account", account)

        assert set(outcome.event_ids) == mine
        assert [m.difference_sealed for m in list_matches(url) if m.match_id == match.match_id] == [None]
        for b in list_breaks(url):
            if b.record_id in mine:
                assert b.amount_sealed is None and b.detail_sealed is None
            else:
                assert b.amount_sealed is not None and b.detail_sealed is not None
