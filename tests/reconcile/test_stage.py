"""The reconciliation stage against the real embedded Postgres: durable, resumable, sealed."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime

import pytest
from cryptography.exceptions import InvalidTag

from agents.messages import IncomingMessage
from agents.reconciliation import ReconciliationStage, redelivered
from protection.blind_index import BlindIndexKey
from reconcile.quality import score
from scenarios.finance import finance_scenario
from schemas.audit import AuditAction
from schemas.catalog import TRANSACTION_V1
from security.verification import VerifiedEvent
from storage.reconciliation import list_breaks, list_matches, load_state
from tests.support.databases import scratch_database

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
KEY = BlindIndexKey("account", os.urandom(32))


def _batches(count: int, seed: int, size: int = 300):
    scenario = finance_scenario(count, seed=seed, mess=0.3, now=NOW)
    pairs = []
    for i, p in enumerate(scenario.payloads):
        message = IncomingMessage("t", i % 2, i, None, b"", NOW)  # the session topics have 2
        pairs.append((message, VerifiedEvent(p["event_id"], p["source"], "kid", "Ed25519", TRANSACTION_V1,
                                             NOW, p)))
    return scenario, [pairs[i:i + size] for i in range(0, len(pairs), size)]


def _stage(settings, url):
    return ReconciliationStage(settings.model_copy(update={"database_url": url}), "worker:test", KEY)


def _stored(url):
    return ({(m.match_id, m.status) for m in list_matches(url)},
            {(b.break_id, b.reason) for b in list_breaks(url)})


async def test_stage_stores_audits_and_resumes_after_a_restart(stack_settings, database_url):
    scenario, batches = _batches(400, seed=3)
    with scratch_database(database_url, "recon") as straight, scratch_database(database_url, "recon") as cut:
        stage = _stage(stack_settings, straight)
        outputs = [await stage.process(b) for b in batches] + [await stage.flush()]
        matches = [m for o in outputs for m in o.matches]
        breaks = [b for o in outputs for b in o.breaks]
        audit = [r for o in outputs for r in o.audit]
        assert len(audit) == len(matches) + len(breaks) > 0
        assert {r.action for r in audit} <= {AuditAction.RECON_MATCHED, AuditAction.RECON_SUGGESTED,
                                            AuditAction.RECON_BREAK}
        assert len({r.audit_id for r in audit}) == len(audit)
        assert any(o.breaks for o in outputs[:-1]), "windows close while the run goes on"
        quality = score(matches, breaks, scenario.truth)
        assert quality.precision >= 0.99 and quality.recall >= 0.97, quality.as_dict()
        assert _stored(straight)[0] == {(m.match_id, m.status.value) for m in matches}

        # The same run, with the worker "killed" after batch 3 and one batch delivered again.
        first = _stage(stack_settings, cut)
        early = [await first.process(b) for b in batches[:3]]
        assert any(o.matches for o in early)
        second = _stage(stack_settings, cut)  # a new process: state comes from Postgres
        for b in batches[2:]:
            await second.process(b)
        await second.flush()
        assert _stored(cut) == _stored(straight)


async def test_pending_state_is_sealed_in_postgres(stack_settings, database_url):
    scenario, batches = _batches(60, seed=4)
    with scratch_database(database_url, "recon") as url:
        stage = _stage(stack_settings, url)
        await stage.process(batches[0])
        sealed, version = load_state(url, "finance")
        assert version == 1 and len(sealed) > 100
        for payload in scenario.payloads[:20]:
            for field in ("reference", "account", "counterparty"):
                assert payload[field].encode() not in sealed
        await stage.flush()
        rows = list_breaks(url)
        assert rows
        for row in rows:
            assert row.amount_sealed is not None and row.amount_sealed[13:] != b""
            assert stage.open_amount(row.amount_sealed, "amount", row.break_id) is not None
            other = ReconciliationStage(stack_settings, "x", BlindIndexKey("account", os.urandom(32)))
            with pytest.raises(InvalidTag):
                other.open_amount(row.amount_sealed, "amount", row.break_id)


async def test_a_lagging_partition_holds_windows_open(stack_settings, database_url):
    def event(partition, offset, reference, day):
        payload = {"event_id": str(uuid.uuid4()), "source": "core-ledger",
                   "issued_at": "2026-11-30T12:00:00Z", "reference": reference,
                   "amount": "10.00", "currency": "EUR", "value_date": day,
                   "account": "DE00123456789", "counterparty": "Acme", "memo": "m", "direction": "debit"}
        return (IncomingMessage("t", partition, offset, None, b"", NOW),
                VerifiedEvent(payload["event_id"], "core-ledger", "k", "Ed25519", TRANSACTION_V1, NOW,
                              payload))

    with scratch_database(database_url, "recon") as url:
        stage = _stage(stack_settings, url)
        early = event(0, 0, "RF1000000000001", "2026-10-01")
        out = await stage.process([early, event(0, 1, "RF1000000000002", "2026-11-20")])
        assert out.breaks == []  # partition 1 has said nothing yet
        out = await stage.process([event(1, 0, "RF1000000000003", "2026-11-20")])
        closed = [(b.record_id, b.reason.value) for b in out.breaks if b.pairing.endswith("statement")]
        assert closed == [(early[1].event_id, "missing")]


async def test_redelivered_messages_reach_the_stage_once(stack_settings, database_url):
    from agents.messages import BatchOutput, DeadLetter
    from security.keyfiles import generate_key
    from streams.producer import sign_payload

    scenario = finance_scenario(20, seed=8, mess=0.0, now=NOW)
    keys = {s: generate_key(s) for s in {p["source"] for p in scenario.payloads}}
    batch = [IncomingMessage("t", i % 2, i, None, sign_payload(keys[p["source"]], p, TRANSACTION_V1), NOW)
             for i, p in enumerate(scenario.payloads)]
    events = {p["event_id"]: VerifiedEvent(p["event_id"], p["source"], "k", "Ed25519", TRANSACTION_V1, NOW, p)
              for p in scenario.payloads}
    half = len(batch) // 2
    with scratch_database(database_url, "recon") as url:
        stage = _stage(stack_settings, url)
        # After a crash between intake's commit and the stage's: intake recognises the first
        # half as stored before (neither accepted nor dead-lettered) and accepts the rest.
        output = BatchOutput(accepted=[(m, events[p["event_id"]]) for m, p in
                                       zip(batch[half:], scenario.payloads[half:], strict=True)])
        await stage.process_batch(batch, output)
        await stage.process_batch(batch, output)  # and the whole batch delivered once more
        end = await stage.flush()
        matched = {i for m in list_matches(url) for i in (*m.left_ids, *m.right_ids)}
        assert matched == {p["event_id"] for p in scenario.payloads}
        assert end.breaks == []
        # A dead-lettered message is not handed on.
        letter = BatchOutput()
        letter.dead_letters.append(DeadLetter(batch[0], "bad_signature", "x", NOW))
        assert [m.position for m, _ in redelivered(batch[:2], letter)] == [batch[1].position]
