"""A full model-pool queue: enrichment slows down, intake does not, and nothing is dropped.

The worker runs with a queue of 2 texts, batches of 2 and no cache, so classification is
always behind and callers are pushed back. Every event must still be stored (intake never
waits for the model) and classified exactly once, successfully: pushing back is waiting,
never dropping, and never a timeout turned into an `inference_failed` record.
"""

from __future__ import annotations

import time

from sqlalchemy import text

from storage.db import engine_for
from tests.faults.checks import audit_verify
from tests.faults.conftest import FaultRun
from tests.faults.results import record

GOOD, BAD = 60, 20

TINY_POOL = {
    "ATTEST_INFERENCE_QUEUE_SIZE": "2",
    "ATTEST_INFERENCE_MAX_BATCH": "2",
    "ATTEST_INFERENCE_CACHE_SIZE": "0",
    # The case is backpressure, not timeouts: the pool's start-up embeds its 30 prototype
    # texts under the per-request timeout, which a loaded machine with batches of 2 can miss
    # (the worker then exits with 70: "the model pool could not start").
    "ATTEST_INFERENCE_TIMEOUT_S": "300",
}


def _inferred_outcomes(run: FaultRun) -> dict[str, int]:
    with engine_for(run.settings.database_url).connect() as conn:
        rows = conn.execute(text(
            "SELECT outcome, count(*) FROM audit_log WHERE action = 'event.inferred' GROUP BY 1"))
        return {r[0]: int(r[1]) for r in rows}


def test_a_full_model_queue_slows_enrichment_and_drops_nothing(fault_run: FaultRun) -> None:
    run = fault_run
    worker = run.worker(extra_env=TINY_POOL)
    worker.start()
    started = time.monotonic()
    run.workload.send(run.workload.build(GOOD, BAD))
    intake, _ = run.wait_done(inferred=False)
    intake_s = time.monotonic() - started
    outcome, _ = run.wait_done(timeout_s=300)
    total_s = time.monotonic() - started
    outcomes = _inferred_outcomes(run)
    verdict = audit_verify(run.settings)
    record("model-pool queue full (2 slots)", outcome, total_s,
           note=f"intake decided all in {intake_s:.0f}s, classification finished at {total_s:.0f}s; "
                f"inference outcomes {outcomes}")

    assert worker.alive, run.explain(outcome)
    assert intake.lost == 0, run.explain(intake)
    assert outcome.lost == 0 and outcome.duplicated == 0, run.explain(outcome)
    assert outcomes == {"ok": GOOD}, f"inference failed or dropped under backpressure: {outcomes}"
    assert verdict.returncode == 0 and "intact" in verdict.stdout, verdict.stdout + verdict.stderr
