"""Counting without a broker: dead-letter identity, outcomes, resume state, health verdicts."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agents.messages import BatchOutput, DeadLetter, IncomingMessage
from operations import outcomes
from operations.errors import ExitCode
from operations.letters import LetterFilter, summarize
from operations.resume import ReplayProgress, clear_progress, load_progress, save_progress
from operations.selection import PartitionRange
from operations.status import Checkpoint, StatusReport, WorkerHealth, assess, lag_rows
from security.errors import Rejection
from security.reasons import RejectReason
from streams.dead_letters import StoredLetter
from tests.support import jws

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def token(payload: dict) -> bytes:
    return jws.token(b'{"alg":"Ed25519"}', payload)


def letter(dlq_offset: int, source_offset: int, value: bytes, reason: str = "unknown_key",
           at: datetime = NOW, topic: str = "attest.transactions") -> StoredLetter:
    return StoredLetter(0, dlq_offset, None, value, {
        "attest-reason": reason, "attest-source-topic": topic,
        "attest-source-partition": "1", "attest-source-offset": str(source_offset),
        "attest-rejected-at": at.isoformat()})


def test_a_rejection_dead_lettered_twice_counts_once() -> None:
    a, b = token({"source": "core-ledger"}), token({"source": "switch"})
    letters = [letter(0, 5, a), letter(1, 6, b, "bad_signature"), letter(2, 5, a),  # crash repeat
               letter(3, 5, b"other bytes")]  # a reused offset: another message
    summary = summarize(letters)
    assert summary.duplicates == 1
    assert [x.offset for x in summary.unique] == [0, 1, 3]
    assert summary.by_reason == {"unknown_key": 2, "bad_signature": 1}


def test_filters_by_reason_time_and_source() -> None:
    old = NOW - timedelta(hours=2)
    letters = [letter(0, 1, token({"source": "core-ledger"})),
               letter(1, 2, token({"source": "switch"}), at=old),
               letter(2, 3, token({"source": "switch"}), "malformed", topic="attest.documents")]
    since = LetterFilter(since=NOW - timedelta(hours=1))
    assert [x.offset for x in summarize(letters, since).unique] == [0, 2]
    assert [x.offset for x in summarize(letters, LetterFilter(reasons=("malformed",))).unique] == [2]
    assert [x.offset for x in summarize(letters, LetterFilter(source="switch")).unique] == [1, 2]
    assert [x.offset for x in summarize(letters, LetterFilter(source="documents")).unique] == [2]
    assert [x.offset for x in summarize(letters, LetterFilter(source="ledger")).unique] == []


def message(offset: int, value: bytes = b"v") -> IncomingMessage:
    return IncomingMessage("attest.transactions", 0, offset, None, value, NOW)


def test_every_message_of_a_batch_lands_in_one_bucket() -> None:
    batch = [message(i) for i in range(6)]
    output = BatchOutput(stored=2)
    output.accepted = [(batch[0], None), (batch[1], None), (batch[2], None)]  # type: ignore[list-item]
    output.dead_letters = [DeadLetter(batch[3], "bad_signature", "", NOW),
                           DeadLetter(batch[4], "unknown_key", "", NOW)]
    counts = outcomes.count_output(len(batch), output)
    # 2 new rows, 1 accepted but already stored, 1 refused today but stored before (batch[5])
    assert counts == {"stored": 2, "unchanged": 2, "rejected:bad_signature": 1,
                      "rejected:unknown_key": 1}
    assert sum(counts.values()) == len(batch)


def test_dry_run_tells_new_from_stored_from_replayed() -> None:
    class Event:
        def __init__(self, event_id: str) -> None:
            self.event_id = event_id

    new, same, moved, refused, refused_stored = (message(i, b"m%d" % i) for i in range(5))
    digest = hashlib.sha256(b"m1").digest()
    stored = {"same": ("attest.transactions", 0, 1, digest),
              "moved": ("attest.transactions", 0, 99, None),
              "was-stored": ("attest.transactions", 0, 4, None)}
    counts = outcomes.dry_run_outcomes(
        [(new, Event("new")), (same, Event("same")), (moved, Event("moved"))],  # type: ignore[list-item]
        [(refused, Rejection(RejectReason.BAD_SIGNATURE, "x")),
         (refused_stored, Rejection(RejectReason.REVOKED_KEY, "x"))],
        stored, {refused_stored.position: "was-stored"})
    assert counts == {"stored": 1, "unchanged": 2, "rejected:replayed": 1, "rejected:bad_signature": 1}


def test_progress_survives_a_round_trip_and_resumes_where_it_stopped(tmp_path: Path) -> None:
    progress = ReplayProgress.fresh("k1", {"topic": "transactions"},
                                    [PartitionRange(0, 0, 10), PartitionRange(1, 3, 5)])
    progress.advance(0, 6)
    progress.add_counts({"stored": 7})
    save_progress(tmp_path, progress)
    loaded = load_progress(tmp_path, "k1")
    assert loaded is not None and loaded.done == 7 and loaded.total == 12
    assert loaded.remaining_ranges() == [PartitionRange(0, 7, 10), PartitionRange(1, 3, 5)]
    assert loaded.counts == {"stored": 7}
    clear_progress(tmp_path, "k1")
    assert load_progress(tmp_path, "k1") is None


def test_lag_counts_from_the_log_start_when_nothing_is_committed() -> None:
    rows = lag_rows("g", "t", {0: (0, 10), 1: (4, 9)}, {0: 7, 1: None})
    assert [(r.partition, r.lag) for r in rows] == [(0, 3), (1, 5)]


def healthy() -> StatusReport:
    return StatusReport(checked_at=NOW, lag=lag_rows("g", "t", {0: (0, 10)}, {0: 10}),
                        audit_rows=50,
                        checkpoint=Checkpoint(last_seq=40, created_at=NOW, age_s=5, audit_rows=50),
                        workers=[WorkerHealth(url="http://w/health", reachable=True, status="ok")])


def test_verdicts_and_exit_codes() -> None:
    assert assess(healthy(), max_lag=100, checkpoint_interval_s=60).exit_code == ExitCode.OK

    lagging = healthy()
    lagging.lag = lag_rows("g", "t", {0: (0, 500)}, {0: 0})
    verdict = assess(lagging, max_lag=100, checkpoint_interval_s=60)
    assert verdict.exit_code == ExitCode.UNHEALTHY and "lags 500" in verdict.problems[0]

    stuck = healthy()
    stuck.checkpoint = Checkpoint(last_seq=40, created_at=NOW, age_s=1000, audit_rows=50)
    assert assess(stuck, max_lag=100, checkpoint_interval_s=60).exit_code == ExitCode.UNHEALTHY

    no_broker = healthy()
    no_broker.broker_error = "refused"
    no_broker.database_error = "refused"
    assert assess(no_broker, max_lag=100, checkpoint_interval_s=60).exit_code == ExitCode.BROKER_UNREACHABLE

    no_db = healthy()
    no_db.database_error = "refused"
    assert assess(no_db, max_lag=100, checkpoint_interval_s=60).exit_code == ExitCode.DATABASE_UNREACHABLE

    no_worker = healthy()
    no_worker.workers = [WorkerHealth(stage="enrichment", url="http://w/health", reachable=False,
                                      error="refused")]
    verdict = assess(no_worker, max_lag=100, checkpoint_interval_s=60)
    assert verdict.exit_code == ExitCode.UNHEALTHY and "enrichment worker" in verdict.problems[0]

    starting = healthy()
    starting.workers = [WorkerHealth(url="http://w/health", reachable=True, status="starting")]
    assert assess(starting, max_lag=100, checkpoint_interval_s=60).exit_code == ExitCode.UNHEALTHY
