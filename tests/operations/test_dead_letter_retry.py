"""The operator's loop end to end with a real worker: reject, fix, retry, check, retry again."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from audit.queries import find_records
from config.settings import Settings
from operations.errors import ExitCode
from operations.letters import LetterFilter, summarize
from operations.selection import Selection
from scenarios.finance import transaction_payloads
from schemas.catalog import TRANSACTION_V1
from security.keyfiles import generate_key
from storage import keys as registry
from storage.events import count_events
from streams.admin import ensure_topics
from streams.dead_letters import read_letters
from streams.producer import OutgoingMessage, send_all, sign_payload
from streams.topics import DEAD_LETTER, TRANSACTIONS
from tests.support.waiting import wait_until
from tests.support.workers import settings_env

pytestmark = pytest.mark.integration


def attest(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args],
                          env={**settings_env(settings), **env},
                          capture_output=True, text=True, timeout=180, check=False)


def worker_log(settings: Settings) -> str:
    logs = sorted(Path(settings.state_dir).glob("worker-*.log"))
    return logs[-1].read_text()[-3000:] if logs else "no worker log"


@pytest.mark.slow  # needs the worker's MiniLM model (enrichment)
def test_unknown_key_letters_are_stored_once_after_the_key_is_registered(
    stack_settings: Settings, worker: subprocess.Popen[bytes]
) -> None:
    url = stack_settings.database_url
    ensure_topics(stack_settings)
    key = generate_key(f"late-{uuid.uuid4().hex[:6]}")  # not registered yet
    payloads = transaction_payloads(8, key.source)
    ids = [p["event_id"] for p in payloads]
    send_all(stack_settings, TRANSACTIONS.name(stack_settings),
             [OutgoingMessage(None, sign_payload(key, p, TRANSACTION_V1)) for p in payloads])
    rejected = wait_until(
        lambda: find_records(url, correlation_ids=ids, action="event.rejected"),
        lambda records: len(records) >= 8, timeout_s=90)
    assert {r.reason for r in rejected} == {"unknown_key"} and len(rejected) == 8, worker_log(stack_settings)

    listed = attest(stack_settings, "dlq", "list", "--reason", "unknown_key", "--source", key.source)
    assert listed.returncode == 0, listed.stderr
    assert "unknown_key: 8" in listed.stdout

    registry.add_key(url, key.kid, key.source, key.alg, key.public_jwk)
    dry = attest(stack_settings, "dlq", "retry", "--reason", "unknown_key", "--source", key.source,
                 "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run" in dry.stdout and "stored" in dry.stdout
    assert count_events(url, ids) == 0  # a dry run writes nothing

    first = attest(stack_settings, "dlq", "retry", "--reason", "unknown_key", "--source", key.source,
                   "--why", "kid registered late")
    assert first.returncode == 0, first.stderr
    assert count_events(url, ids) == 8

    second = attest(stack_settings, "dlq", "retry", "--reason", "unknown_key", "--source", key.source)
    assert second.returncode == 0, second.stderr
    assert count_events(url, ids) == 8

    # Nothing was written to the dead-letter topic again: still one letter per message.
    mine = LetterFilter(source=key.source)
    letters = [x for x in read_letters(stack_settings) if mine.admits(x)]
    assert len(letters) == 8

    # The audit trail shows both retries, their counts, and each event stored once.
    selection_key = Selection("dead-letter", reasons=("unknown_key",), source=key.source).key(
        DEAD_LETTER.name(stack_settings))
    retries = wait_until(
        lambda: find_records(url, correlation_ids=[f"replay:{selection_key}"], action="dlq.retried"),
        lambda records: len(records) >= 2, timeout_s=150)
    # Letters of other tests sharing the topic are "filtered"; ours are stored, then unchanged.
    mine_only = [{k: v for k, v in r.detail["counts"].items() if k != "filtered"} for r in retries]
    assert mine_only == [{"stored": 8}, {"unchanged": 8}], (
        selection_key, [(r.correlation_id, r.detail) for r in find_records(url, action="dlq.retried")],
        first.stdout, first.stderr)
    assert retries[0].detail["why"] == "kid registered late"
    assert all(r.actor.startswith("operator:") for r in retries)
    stored = wait_until(lambda: find_records(url, correlation_ids=ids, action="event.stored"),
                        lambda records: len(records) >= 8, timeout_s=60)
    assert sorted(r.correlation_id for r in stored) == sorted(ids)
    inferred = wait_until(lambda: find_records(url, correlation_ids=ids, action="event.inferred"),
                          lambda records: len(records) >= 8, timeout_s=60)
    assert len({r.correlation_id for r in inferred}) == 8

    status = attest(stack_settings, "status", "--json",
                    ATTEST_WORKER_WEB_PORT=str(worker.web_port))  # type: ignore[attr-defined]
    report = json.loads(status.stdout)
    assert status.returncode == report["exit_code"], status.stderr
    intake = next(w for w in report["workers"] if w["stage"] == "intake")
    assert intake["reachable"], intake
    assert report["dead_letters_last_hour"].get("unknown_key", 0) >= 8
    groups = {row["group"] for row in report["lag"]}
    assert stack_settings.app_id in groups
    assert report["audit_rows"] > 0


def test_dead_letters_counted_once_in_list_and_status(stack_settings: Settings) -> None:
    """A rejection dead-lettered twice (a worker crash between publish and commit) counts once."""
    ensure_topics(stack_settings)
    source = f"twice-{uuid.uuid4().hex[:6]}"
    value = sign_payload(generate_key(source), transaction_payloads(1, source)[0], TRANSACTION_V1)
    headers = [("attest-reason", b"bad_signature"), ("attest-detail", b"test"),
               ("attest-source-topic", TRANSACTIONS.name(stack_settings).encode()),
               ("attest-source-partition", b"0"), ("attest-source-offset", b"999999"),
               ("attest-rejected-at", b"2026-12-01T00:00:00+00:00")]
    from confluent_kafka import Producer

    from streams.admin import kafka_config
    producer = Producer(kafka_config(stack_settings))
    for _ in range(2):
        producer.produce(DEAD_LETTER.name(stack_settings), value=value, headers=headers)
    assert producer.flush(10) == 0
    summary = summarize(read_letters(stack_settings), LetterFilter(source=source))
    assert len(summary.unique) == 1 and summary.duplicates >= 1
    listed = attest(stack_settings, "dlq", "list", "--source", source)
    assert "bad_signature: 1" in listed.stdout and "repeated" in listed.stdout


@pytest.mark.parametrize("args, env, code", [
    (["replay", "--topic", "nope", "--reason", "x"], {}, ExitCode.UNKNOWN_TOPIC),
    (["replay", "--topic", "transactions", "--reason", "x", "--partition", "0",
      "--from-offset", "99999999"], {}, ExitCode.OFFSET_OUT_OF_RANGE),
    (["replay", "--topic", "transactions", "--reason", "x", "--since", "last tuesday"], {},
     ExitCode.BAD_TIME),
    (["dlq", "list", "--since", "soon"], {}, ExitCode.BAD_TIME),
    (["replay", "--topic", "transactions", "--reason", "x"],
     {"ATTEST_KAFKA_BOOTSTRAP": "127.0.0.1:1"}, ExitCode.BROKER_UNREACHABLE),
    (["replay", "--topic", "transactions", "--reason", "x", "--event-id", str(uuid.uuid4())],
     {"ATTEST_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/attest"}, ExitCode.DATABASE_UNREACHABLE),
    (["replay", "--topic", "transactions", "--reason", "x", "--event-id", str(uuid.uuid4())], {},
     ExitCode.UNKNOWN_EVENT),
    (["status", "--no-worker"], {"ATTEST_KAFKA_BOOTSTRAP": "127.0.0.1:1"}, ExitCode.BROKER_UNREACHABLE),
    (["status", "--no-worker"], {"ATTEST_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/attest"},
     ExitCode.DATABASE_UNREACHABLE),
])
def test_operator_mistakes_and_outages_have_their_own_exit_code(
    stack_settings: Settings, args: list[str], env: dict[str, str], code: ExitCode,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """In-process (the CLI's import costs seconds per subprocess on this machine)."""
    from cli.main import app
    from config.settings import get_settings

    ensure_topics(stack_settings)
    for name, value in {**settings_env(stack_settings), **env}.items():
        if name.startswith("ATTEST_"):
            monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit) as exited:
            app(args, standalone_mode=True)
    finally:
        get_settings.cache_clear()
    out = capsys.readouterr()
    assert exited.value.code == code, out.out + out.err
    if args[0] != "status":
        assert out.err.strip().startswith("error:") and out.err.count("error") == 1
