"""The whole pipeline on one laptop: what ``make demo`` runs.

Starts the embedded stack (unless one runs already), migrates, makes keys, starts a real
worker process, sends signed payments (some tampered, one replayed, one garbage) and agency
documents, waits until the audit log has a decision for every message, prints a summary,
and stops what it started.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from audit.queries import decision_counts
from audit.trust import pin_own_key_for_development
from config.settings import Settings
from devstack import stack
from devstack.errors import DevStackError
from devstack.processes import choose_port, terminate_tree
from devstack.signers import provision_embedded_signers
from operations.operator_audit import operator_record
from scenarios.finance import transaction_payloads
from scenarios.government import AGENCIES, document_payloads
from schemas.audit import AuditAction
from schemas.catalog import DOCUMENT_V1, TRANSACTION_V1
from security.intake_keys import ensure_intake_key
from security.keyfiles import SigningKey, generate_key, keys_for_source, write_private_key
from security.nested import seal_for_intake
from security.private_files import open_private_log
from storage import migrate
from storage.events import count_events
from storage.keys import KeyConflict, add_key, key_snapshot
from streams.admin import ensure_topics
from streams.audit_publisher import publish_audit
from streams.producer import OutgoingMessage, send_all, sign_payload, tamper
from streams.topics import DOCUMENTS, TRANSACTIONS

SOURCE = "core-ledger"
#: Who the audit log says registered the demo's keys.
DEMO_ACTOR = "operator:attest-demo"


@dataclass
class DemoSummary:
    sent: int
    accepted: int
    rejected: Counter[str] = field(default_factory=Counter)
    stored_rows: int = 0
    classified: int = 0
    audit_records: int = 0
    seconds: float = 0.0


def worker_environment(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "ATTEST_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "ATTEST_DATABASE_URL": settings.database_url,
        "ATTEST_STATE_DIR": str(settings.state_dir),
        "ATTEST_WORKER_WEB_PORT": str(choose_port(settings.worker_web_port)),
        "ATTEST_ENRICHMENT_WEB_PORT": str(choose_port(settings.enrichment_web_port)),
    })
    return env


def start_worker(settings: Settings) -> subprocess.Popen[bytes]:
    """A real ``attest worker`` process, logging to ``<state>/worker.log``."""
    log = open_private_log(settings.state_dir / "worker.log")  # 0600
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", "worker"],
        env=worker_environment(settings),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        terminate_tree(proc.pid, timeout_s=15)
    proc.wait(timeout=5)


def signing_key(settings: Settings, source: str) -> SigningKey:
    """The newest local key of ``source``, registered; made (0600) when there is none.

    A key the demo registers is audited (``key.added``) before it is registered, like one
    registered with ``attest keys``: if the record cannot be sent, the key is not registered.
    """
    keys = keys_for_source(settings.keys_dir, source)
    key = keys[0] if keys else generate_key(source)
    try:
        if key.kid in key_snapshot(settings.database_url):  # an earlier demo's (recorded then)
            add_key(settings.database_url, key.kid, source, key.alg, key.public_jwk, department=source)
        else:
            _register_audited(settings, key, source)
    except KeyConflict:
        # A key an older demo registered unbound cannot be re-bound: the demo makes a new one.
        keys, key = [], generate_key(source)
        _register_audited(settings, key, source)
    if not keys:
        write_private_key(key, settings.keys_dir)
    return key


def _register_audited(settings: Settings, key: SigningKey, source: str) -> None:
    publish_audit(settings, [operator_record(
        AuditAction.KEY_ADDED, key.kid, DEMO_ACTOR,
        {"source": source, "alg": key.alg, "department": source, "by": "attest demo"})])
    add_key(settings.database_url, key.kid, source, key.alg, key.public_jwk, department=source)


def demo_transactions(
    settings: Settings, count: int, tampered: int, seed: int | None = None
) -> list[OutgoingMessage]:
    """``count`` signed payments, ``tampered`` of them altered, plus one replay and one garbage."""
    key = signing_key(settings, SOURCE)
    step = max(1, count // max(tampered, 1))
    spoiled = set(range(step // 2, count, step)[:tampered])
    messages = []
    for i, payload in enumerate(transaction_payloads(count, SOURCE, seed)):
        token = sign_payload(key, payload, TRANSACTION_V1)
        messages.append(OutgoingMessage(
            key=payload["reference"].encode(), value=tamper(token) if i in spoiled else token
        ))
    replay = next(m for i, m in enumerate(messages) if i not in spoiled)
    messages.append(OutgoingMessage(key=replay.key, value=replay.value))
    messages.append(OutgoingMessage(key=b"garbage", value=b"this is not a JWS"))
    return messages


def demo_documents(settings: Settings, count: int, seed: int | None = None) -> list[OutgoingMessage]:
    """Tax returns and contribution records, each agency signing its own, then encrypting it
    to Attest's intake key (nested JWT): income never sits in clear on the topic."""
    keys = {agency: signing_key(settings, agency) for agency in AGENCIES}
    intake, _ = ensure_intake_key(settings.intake_keys_dir)
    return [
        OutgoingMessage(key=p["document_id"].encode(),
                        value=seal_for_intake(sign_payload(keys[p["source"]], p, DOCUMENT_V1),
                                              intake.public_jwk))
        for p in document_payloads(count, seed)
    ]


def run_demo(
    settings: Settings,
    count: int,
    tampered: int,
    say: Callable[[str], None],
    documents_count: int = 40,
    seed: int | None = None,
    timeout_s: float = 300.0,
) -> DemoSummary:
    started = time.monotonic()
    was_running = stack.status(settings).running
    info = stack.up(settings, notice=say)
    worker = None
    try:
        settings = settings.model_copy(
            update={"kafka_bootstrap": info.kafka_bootstrap, "database_url": info.database_url}
        )
        say(f"stack: broker {info.kafka_bootstrap}, postgres {info.database_url}")
        migrate.upgrade(settings.database_url)
        ensure_topics(settings)
        # The worker's and this command's audit-signing keys: the sink chains only signed records.
        provision_embedded_signers(settings, say, info)
        # `attest audit verify` trusts only a pinned key: on this one machine, the demo's own.
        if (pinned := pin_own_key_for_development(settings)) is not None:
            say(f"audit: pinned checkpoint key {pinned.names} for `attest audit verify`")
        run_start = datetime.now(UTC) - timedelta(seconds=1)
        payments = demo_transactions(settings, count, tampered, seed)
        documents = demo_documents(settings, documents_count, seed)
        messages = payments + documents
        # The worker logs in as the least-privilege role `attest dev up` created (exactly the
        # grants the pipeline needs), not as the database owner.
        worker = start_worker(settings.model_copy(
            update={"database_url": info.worker_database_url or info.database_url}))
        say(f"worker started (pid {worker.pid}); sending {len(payments)} payments "
            f"and {len(documents)} agency documents (encrypted to the intake key)")
        send_all(settings, TRANSACTIONS.name(settings), payments)
        send_all(settings, DOCUMENTS.name(settings), documents)
        deadline = time.monotonic() + timeout_s
        last_report = 0.0
        while True:
            counts = decision_counts(settings.database_url, since=run_start)
            # Every message decided, and every accepted one classified by the enrichment
            # stage, which follows intake on a consumer group of its own.
            if counts.decided >= len(messages) and counts.inferred >= counts.accepted:
                break
            if worker.poll() is not None:
                raise DevStackError(
                    f"the worker exited with code {worker.returncode}; "
                    f"see {settings.state_dir / 'worker.log'}"
                )
            if time.monotonic() > deadline:
                raise DevStackError(
                    f"only {counts.decided} of {len(messages)} messages were decided within "
                    f"{timeout_s:.0f}s; see {settings.state_dir / 'worker.log'}"
                )
            if time.monotonic() - last_report > 5:
                say(f"  decided {counts.decided}/{len(messages)}, "
                    f"classified {counts.inferred}/{counts.accepted}")
                last_report = time.monotonic()
            time.sleep(0.5)
        time.sleep(1.0)  # let the sink append the last batch's stored records
        counts = decision_counts(settings.database_url, since=run_start)
        return DemoSummary(
            sent=len(messages),
            accepted=counts.accepted,
            rejected=counts.rejected,
            stored_rows=count_events(settings.database_url, since=run_start),
            classified=counts.inferred,
            audit_records=counts.audit_records,
            seconds=time.monotonic() - started,
        )
    finally:
        if worker is not None:
            stop_worker(worker)
        if not was_running:
            stack.down(settings)
