"""Replays against the real broker and Postgres: interrupted and resumed, idempotent.

These use a topic prefix of their own, which the session's worker does not consume, so
every event here is stored by the replay itself and nothing else.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections import Counter
from pathlib import Path

import pytest

from audit.signing import unsigned_payload  # audit messages are signed (docs/audit.md)
from config.settings import Settings
from operations.broker_reads import BrokerReader
from operations.replay import Replay, ReplayResult, plan
from operations.resume import load_progress, progress_path
from operations.selection import Selection
from scenarios.government import approval_payload
from schemas.catalog import APPROVAL_V1
from security.keyfiles import SigningKey, generate_key
from storage import keys as registry
from storage.events import count_events
from streams.admin import ensure_topics
from streams.producer import OutgoingMessage, send_all, sign_payload
from streams.topics import APPROVALS, AUDIT, TRANSACTIONS
from tests.support.topics import read_topic
from tests.support.waiting import wait_for
from tests.support.workers import settings_env

pytestmark = pytest.mark.integration


@pytest.fixture
def own(stack_settings: Settings) -> Settings:
    """Topics nobody else reads, small batches (approvals: no model needed)."""
    settings = stack_settings.model_copy(update={
        "topic_prefix": f"r{uuid.uuid4().hex[:6]}.", "batch_size": 10})
    ensure_topics(settings)
    return settings


@pytest.fixture
def approver_key(stack_settings: Settings) -> SigningKey:
    key = generate_key(f"dpo-{uuid.uuid4().hex[:6]}")
    registry.add_key(stack_settings.database_url, key.kid, key.source, key.alg, key.public_jwk)
    return key


def send_approvals(settings: Settings, key: SigningKey, n: int) -> list[str]:
    payloads = [approval_payload(f"REQ-{i}", "alice", 2, source=key.source) for i in range(n)]
    send_all(settings, APPROVALS.name(settings),
             [OutgoingMessage(None, sign_payload(key, p, APPROVAL_V1)) for p in payloads])
    return [p["event_id"] for p in payloads]


def run(settings: Settings, selection: Selection, stop: threading.Event | None = None,
        stop_after_first_batch: bool = False) -> ReplayResult:
    with BrokerReader(settings) as reader:
        progress = plan(settings, selection, reader)
    stop = stop or threading.Event()
    replay = Replay(settings, selection, reason="test replay", actor="operator:test", stop=stop,
                    on_advance=(lambda n: stop.set()) if stop_after_first_batch else None)
    return asyncio.run(replay.run(progress))


def test_an_interrupted_replay_resumes_and_processes_every_event_once(
    own: Settings, approver_key: SigningKey
) -> None:
    url = own.database_url
    ids = send_approvals(own, approver_key, 45)
    selection = Selection("approvals")

    first = run(own, selection, stop_after_first_batch=True)
    assert first.interrupted and first.done == 10
    assert count_events(url, ids) == 10
    saved = load_progress(own.state_dir, selection.key(APPROVALS.name(own)))
    assert saved is not None and saved.done == 10

    second = run(own, selection)
    assert not second.interrupted and second.resumed
    assert second.processed_this_run == 35
    # Counts cover both runs: 45 stored, none seen twice.
    assert second.counts == {"stored": 45}
    assert count_events(url, ids) == 45
    assert load_progress(own.state_dir, selection.key(APPROVALS.name(own))) is None

    # The same replay again is a new run that changes nothing.
    third = run(own, selection)
    assert third.counts == {"unchanged": 45} and not third.resumed
    assert count_events(url, ids) == 45

    dry = run(own, Selection("approvals", dry_run=True))
    assert dry.counts == {"unchanged": 45}

    audit = [json.loads(unsigned_payload(m.value())) for m in read_topic(own, AUDIT.name(own), idle_s=1.5)]
    finished = [r for r in audit if r["action"] == "replay.finished"]
    assert [r["detail"]["interrupted"] for r in finished] == [True, False, False]
    # A repeated decision carries the same audit id (the sink stores it once): one per event.
    stored = {(r["correlation_id"], r["audit_id"]) for r in audit if r["action"] == "event.stored"}
    assert Counter(event_id for event_id, _ in stored) == Counter(ids)


def test_offsets_and_event_ids_select_exactly_those_messages(
    own: Settings, approver_key: SigningKey
) -> None:
    url = own.database_url
    ids = send_approvals(own, approver_key, 12)
    with BrokerReader(own) as reader:
        marks = reader.watermarks(APPROVALS.name(own))
    partition = max(marks, key=lambda p: marks[p][1] - marks[p][0])
    low, high = marks[partition]
    one = run(own, Selection("approvals", partition=partition, from_offset=low, to_offset=low))
    assert one.counts == {"stored": 1}
    assert count_events(url, ids) == 1

    rest = run(own, Selection("approvals"))
    assert rest.counts == {"stored": 11, "unchanged": 1}
    picked = run(own, Selection("approvals", event_ids=(ids[3], ids[7])))
    assert picked.counts == {"unchanged": 2} and picked.total == 2


def test_ctrl_c_stops_the_cli_cleanly_and_the_same_command_resumes(
    own: Settings, approver_key: SigningKey
) -> None:
    url = own.database_url
    ids = send_approvals(own, approver_key, 40)
    env = settings_env(own)
    command = [sys.executable, "-m", "cli.main", "replay", "--topic", "approvals",
               "--reason", "ctrl-c test"]
    key = Selection("approvals").key(APPROVALS.name(own))
    state = progress_path(own.state_dir, key)
    proc = subprocess.Popen([*command, "--rate", "12"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)

    def started_or_exited() -> bool:
        progress = load_progress(own.state_dir, key) if state.exists() else None
        return proc.poll() is not None or (progress is not None and progress.done > 0)

    wait_for(started_or_exited, 60, "the replay to record progress")
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "run the same command again to resume" in err
    stored_before = count_events(url, ids)
    assert 0 < stored_before < 40

    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    assert count_events(url, ids) == 40
    assert not state.exists()
    audit = [json.loads(unsigned_payload(m.value())) for m in read_topic(own, AUDIT.name(own), idle_s=1.5)]
    finished = [r for r in audit if r["action"] == "replay.finished"]
    assert len(finished) == 2 and finished[-1]["detail"]["counts"] == {"stored": 40}
    assert all(r["actor"].startswith("operator:") for r in finished)


@pytest.mark.slow  # loads the MiniLM model
def test_a_replay_with_another_model_stores_its_results_beside_the_old(
    own: Settings, tmp_path: Path
) -> None:
    from inference.encoder import bundled_model_dir
    from scenarios.finance import transaction_payloads
    from schemas.catalog import TRANSACTION_V1
    from storage.inferences import inferences_for

    url = own.database_url
    key = generate_key(f"ledger-{uuid.uuid4().hex[:6]}")
    registry.add_key(url, key.kid, key.source, key.alg, key.public_jwk)
    payloads = transaction_payloads(4, key.source)
    send_all(own, TRANSACTIONS.name(own),
             [OutgoingMessage(None, sign_payload(key, p, TRANSACTION_V1)) for p in payloads])
    first = run(own, Selection("transactions"))
    assert first.counts == {"stored": 4}
    before = {p["event_id"]: inferences_for(url, p["event_id"]) for p in payloads}
    assert all(len(results) == 1 for results in before.values())

    # Another model folder: the same weights under another name are another model version.
    other = tmp_path / "minilm-candidate"
    other.mkdir()
    for item in bundled_model_dir().iterdir():
        (other / item.name).symlink_to(item)
    second = run(own, Selection("transactions", model_dir=str(other)))
    assert second.counts == {"unchanged": 4}
    assert second.model_version and second.model_version.startswith("minilm-candidate@")
    for p in payloads:
        versions = {r.model_version for r in inferences_for(url, p["event_id"])}
        assert versions == {before[p["event_id"]][0].model_version, second.model_version}
    # Again with the same model: nothing new to infer.
    third = run(own, Selection("transactions", model_dir=str(other)))
    assert third.counts == {"unchanged": 4}
    assert all(len(inferences_for(url, p["event_id"])) == 2 for p in payloads)
