"""The fuzzy stage with the real bundled MiniLM (slow: loads the model)."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import numpy as np
import pytest

from agents.messages import IncomingMessage
from agents.reconciliation import ReconciliationStage
from inference.encoder import Encoder
from inference.pool import ModelPool
from protection.blind_index import BlindIndexKey
from reconcile.cascade import new_pool, run_cascade
from reconcile.config import MatchConfig
from reconcile.models import Stage
from reconcile.quality import score
from scenarios.finance import finance_scenario
from schemas.catalog import TRANSACTION_V1
from security.verification import VerifiedEvent
from tests.reconcile.builders import ledger, statement
from tests.support.databases import scratch_database

pytestmark = pytest.mark.slow
NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder(device="cpu", precision="fp32")


def test_model_similarity_tells_twins_apart(encoder: Encoder):
    def similarity(pairs):
        a = encoder.encode([p[0] for p in pairs])
        b = encoder.encode([p[1] for p in pairs])
        return list(np.clip((a * b).sum(axis=1), 0, 1))

    rent = ledger("RF1212121212121", "250.00", counterparty="Alpine Ski House KG", memo="rent March")
    fees = ledger("RF1212121212122", "250.00", counterparty="Trey Research AB", memo="consulting fees")
    s_fees = statement("NONREF", "250.00", counterparty="TREY RES", memo="CONSULTING FEES MARCH")
    s_rent = statement("NONREF", "250.00", counterparty="ALPINE SKI", memo="MONTHLY RENT MARCH")
    pool = run_cascade(new_pool("p", [rent, fees], [s_fees, s_rent]), MatchConfig(), similarity)
    pairs = {(m.left_ids[0], m.right_ids[0]) for m in pool.matches if m.stage is Stage.FUZZY}
    assert pairs == {(rent.record_id, s_rent.record_id), (fees.record_id, s_fees.record_id)}


async def test_stage_with_the_model_pool_meets_the_targets(encoder: Encoder, stack_settings, database_url):
    scenario = finance_scenario(600, seed=21, mess=0.3, now=NOW)
    pairs = [(IncomingMessage("t", 0, i, None, b"", NOW),
              VerifiedEvent(p["event_id"], p["source"], "k", "Ed25519", TRANSACTION_V1, NOW, p))
             for i, p in enumerate(scenario.payloads)]
    async with ModelPool(encoder, max_wait_ms=2.0, warmup=False) as model:
        calls = []

        async def embed(texts):
            calls.append(len(texts))
            return await model.embed(list(texts))

        with scratch_database(database_url, "recon") as url:
            stage = ReconciliationStage(stack_settings.model_copy(update={"database_url": url}), "w",
                                        BlindIndexKey("account", os.urandom(32)), embed=embed)
            outputs = [await stage.process(pairs[i:i + 400]) for i in range(0, len(pairs), 400)]
            outputs.append(await stage.flush())
    matches = [m for o in outputs for m in o.matches]
    breaks = [b for o in outputs for b in o.breaks]
    quality = score(matches, breaks, scenario.truth)
    assert calls, "the fuzzy stage asked the model"
    assert quality.precision >= 0.99 and quality.recall >= 0.97, quality.as_dict()
    assert quality.by_stage["fuzzy"]["links"] > 0 and quality.by_stage["fuzzy"]["precision"] >= 0.98


def test_model_tells_reworded_purposes_of_one_counterparty_apart(encoder: Encoder):
    """Same account, day, amount and counterparty; the statement rewords the purposes.
    String distance cannot separate them (both pairs score alike); the model can."""
    def similarity(pairs):
        a = encoder.encode([p[0] for p in pairs])
        b = encoder.encode([p[1] for p in pairs])
        return list(np.clip((a * b).sum(axis=1), 0, 1))

    rent = ledger("RF3434343434341", "500.00", counterparty="Contoso AG", memo="rent October 2026")
    power = ledger("RF3434343434342", "500.00", counterparty="Contoso AG", memo="utilities October 2026")
    s_power = statement("NONREF", "500.00", counterparty="CONTOSO AG",
                        memo="ELECTRICITY AND WATER OCTOBER 2026")
    s_rent = statement("NONREF", "500.00", counterparty="CONTOSO AG", memo="MONTHLY LEASE OCTOBER 2026")
    with_model = run_cascade(new_pool("p", [rent, power], [s_power, s_rent]), MatchConfig(), similarity)
    pairs = {(m.left_ids[0], m.right_ids[0]) for m in with_model.matches}
    assert pairs == {(rent.record_id, s_rent.record_id), (power.record_id, s_power.record_id)}
    strings_only = run_cascade(new_pool("p", [rent, power], [s_power, s_rent]), MatchConfig())
    assert all(m.status.value == "suggested" for m in strings_only.matches)
