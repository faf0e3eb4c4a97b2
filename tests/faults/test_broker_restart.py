"""The broker process killed and restarted mid-stream.

The embedded broker (Tansu, memory storage) forgets every topic, offset and group when it
dies, so what was in it and not yet consumed is lost upstream; against Kafka with durable
logs (docker-compose) nothing would be. The case is therefore: the worker reconnects by
itself, never hangs, decides everything sent after the restart exactly once, stores nothing
twice, and the loss is counted (and said) rather than hidden.
"""

from __future__ import annotations

import time

from streams.admin import ensure_topics
from tests.faults.checks import audit_verify, observe
from tests.faults.conftest import FaultRun
from tests.faults.results import record
from tests.support.waiting import wait_until

GOOD, BAD = 60, 20


def test_the_worker_survives_a_broker_restart_and_counts_what_was_lost(fault_run: FaultRun) -> None:
    run = fault_run
    worker = run.worker()
    worker.start()
    # Before: good events only, so positions reused by the new broker's offsets never make a
    # rejection of one wave look like a second rejection of another.
    settled = run.workload.send(run.workload.build(GOOD, 0))
    run.wait_done(settled)
    before = max(run.progress(), 0)
    in_flight = run.workload.send(run.workload.build(GOOD, 0))
    target = before + int(len(in_flight) * run.rng.uniform(0.1, 0.6))
    wait_until(run.progress, lambda n: n >= target, timeout_s=90)
    run.stack.kill_broker()
    run.stack.start_broker()
    back = time.monotonic()
    # A producer recreates the topics (as `attest produce` does) and goes on sending.
    ensure_topics(run.settings)
    after = run.workload.send(run.workload.build(GOOD, BAD))
    decided, _ = run.wait_done(after, timeout_s=90, inferred=False)
    intake_recovery = time.monotonic() - back
    classified, _ = run.wait_done(after, timeout_s=60)
    recovery = time.monotonic() - back
    interrupted = observe(run.settings, in_flight, letters=False, inferred=False,
                          universe=run.workload.sent)
    lost_upstream = len(interrupted.missing_stored)
    verdict = audit_verify(run.settings)
    record("broker killed and restarted (memory broker)", classified, recovery,
           lost_upstream=lost_upstream,
           note=f"intake decided everything sent after the restart in {intake_recovery:.0f}s; "
                + ("classification followed" if classified.complete else
                   f"classification had not resumed {recovery:.0f}s after the restart "
                   "(enrichment stall)")
                + f"; of {len(in_flight)} events in flight at the kill, {lost_upstream} were "
                "never consumed (lost upstream by the memory broker)")

    assert worker.alive, run.explain(decided)
    assert decided.lost == 0, run.explain(decided)
    assert decided.duplicated == 0, run.explain(decided)
    assert not interrupted.unexpected_rows
    assert verdict.returncode == 0 and "intact" in verdict.stdout, verdict.stdout + verdict.stderr
    # Faust kept the old log's positions: it dropped the new log's messages below them and
    # committed old offsets into the new group, so enrichment stalled for minutes (an xfail
    # until streams/log_reset.py rewinds a stage whose log started again).
    assert classified.complete, run.explain(classified)
