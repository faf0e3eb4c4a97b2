"""A flood of invalid events interleaved with valid ones, poison messages among them.

The valid events must not be starved (each is stored while the flood is still being worked
through, not after it), every invalid one is dead-lettered once, and no poison message (a
validly signed event Postgres cannot hold) stops the worker.
"""

from __future__ import annotations

import time

from sqlalchemy import text

from storage.db import engine_for
from tests.faults.checks import audit_verify
from tests.faults.conftest import FaultRun
from tests.faults.results import record

GOOD, BAD = 60, 600


def _decided_at(run: FaultRun) -> tuple[list[float], list[float]]:
    """Audit times (epoch seconds) of stored and of rejected decisions."""
    with engine_for(run.settings.database_url).connect() as conn:
        rows = conn.execute(text(
            "SELECT action, extract(epoch FROM recorded_at) FROM audit_log "
            "WHERE action IN ('event.stored', 'event.rejected')")).all()
    return ([float(t) for a, t in rows if a == "event.stored"],
            [float(t) for a, t in rows if a == "event.rejected"])


def test_a_flood_of_invalid_events_does_not_starve_valid_ones(fault_run: FaultRun) -> None:
    run = fault_run
    worker = run.worker()
    worker.start()
    flood = run.workload.build(GOOD, BAD)
    # The poison goes early, so everything after it in its partition must still flow.
    flood[10:10] = run.workload.poison()
    started = time.monotonic()
    run.workload.send(flood)
    outcome, _ = run.wait_done(timeout_s=240)
    took = time.monotonic() - started
    stored_at, rejected_at = _decided_at(run)
    verdict = audit_verify(run.settings)
    record("flood of invalid events (10:1) with poison", outcome, took,
           note=f"{BAD} invalid + 3 poison interleaved with {GOOD} valid; recovery = time to decide all")

    assert worker.alive, run.explain(outcome)
    assert outcome.lost == 0, run.explain(outcome)
    assert outcome.duplicated == 0, run.explain(outcome)
    assert not outcome.wrong_reasons, run.explain(outcome)
    # Not starved: half of the valid events were stored no later than the last rejection was
    # decided. Intake's batch consumer may take the whole flood in one batch, whose records the
    # sink appends at one instant; a starved stage would store them after every rejection.
    assert sorted(stored_at)[len(stored_at) // 2] <= max(rejected_at)
    assert verdict.returncode == 0 and "intact" in verdict.stdout, verdict.stdout + verdict.stderr
