"""The reconciliation role behind the real intake stage: only what intake stored, once."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agents.intake import IntakeProcessor
from agents.messages import IncomingMessage
from agents.reconciliation import ReconciliationWorker
from protection.fields import FieldProtector
from protection.keyring import generate_keyring
from protection.tiers import protection_catalog
from reconcile.quality import score
from scenarios.finance import finance_scenario
from scenarios.government import consistency_scenario
from schemas.audit import AuditAction
from schemas.catalog import DOCUMENT_V1, TRANSACTION_V1
from security.keyfiles import generate_key
from security.registry import KeyRecord
from streams.producer import sign_payload, tamper
from tests.support.databases import scratch_database

pytestmark = pytest.mark.integration


async def test_role_reconciles_what_intake_stored_and_skips_what_it_rejected(stack_settings, database_url):
    now = datetime.now(UTC)
    scenario = finance_scenario(150, seed=12, mess=0.3, now=now)
    documents, truth = consistency_scenario(20, seed=2, rate=0.3, now=now)
    sources = {p["source"] for p in scenario.payloads + documents}
    keys = {s: generate_key(s) for s in sources}
    snapshot = {k.kid: KeyRecord(kid=k.kid, source=k.source, alg=k.alg, public_jwk=k.public_jwk)
                for k in keys.values()}
    batch = [IncomingMessage("tx", i % 2, i, None, sign_payload(keys[p["source"]], p, TRANSACTION_V1), now)
             for i, p in enumerate(scenario.payloads)]
    forged = tamper(batch[0].value)
    batch[0] = IncomingMessage("tx", 0, 0, None, forged, now)
    docs = [IncomingMessage("doc", 0, i, None, sign_payload(keys[p["source"]], p, DOCUMENT_V1), now)
            for i, p in enumerate(documents)]
    keyring = generate_keyring(protection_catalog().domains)
    with scratch_database(database_url, "role") as url:
        settings = stack_settings.model_copy(update={"database_url": url})
        types = {"tx": frozenset({TRANSACTION_V1}), "doc": frozenset({DOCUMENT_V1})}
        intake = IntakeProcessor(settings, "w", types, protector=FieldProtector(keyring.restricted_to(())))
        intake.replace_keys(snapshot)
        stored = await intake.process(batch)
        await intake.process(docs)
        assert len(stored.dead_letters) == 1

        def progress(positions):
            return {p: 10**9 for p in positions}  # intake has decided everything

        role = ReconciliationWorker(settings, "w", keyring.blind_index_key("account"),
                                    keyring.blind_index_key("national_id"), progress)
        first = await role.process(batch)
        again = await role.process(batch)  # a redelivery after a crash: nothing new
        docs_out = await role.process(docs)
        docs_again = await role.process(docs)
        end_finance, end_gov = await role.finance.flush(), await role.government.flush()
        assert docs_again.discrepancies == []
        forged_id = scenario.payloads[0]["event_id"]
        everything = [first, again, docs_out, end_finance, end_gov]
        matched = {i for o in everything for m in o.matches for i in (*m.left_ids, *m.right_ids)}
        broken = {b.record_id for o in everything for b in o.breaks}
        assert forged_id not in matched | broken  # intake rejected it: never reconciled
        assert (len(first.matches), len(again.matches), len(again.breaks)) == (len(first.matches), 0, 0)
        quality = score([m for o in everything for m in o.matches], [], scenario.truth)
        assert quality.precision == 1.0
        actions = {r.action for o in everything for r in o.audit}
        assert {AuditAction.RECON_MATCHED, AuditAction.RECON_INCONSISTENT} <= actions
        assert sum(1 for o in everything for _ in o.discrepancies) >= len(truth["inconsistent"])
