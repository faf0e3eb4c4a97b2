"""Issue 14, item 6 through a real worker: a key speaks only for its schemas and department.

A ``core-ledger`` key bound to transactions and to its own department signs a document with
``agency: tax-bureau``: the worker dead-letters it as ``scope_mismatch`` and stores nothing,
while the same key's transactions are stored.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from config.settings import Settings
from scenarios.government import TAX_BUREAU, document_payloads
from schemas.catalog import DOCUMENT_V1, TRANSACTION_V1
from security.keyfiles import SigningKey, generate_key
from storage import keys as registry
from storage.db import engine_for
from streams.admin import ensure_topics
from streams.producer import OutgoingMessage, send_all
from streams.topics import DEAD_LETTER, DOCUMENTS
from tests.support.topics import read_topic
from tests.support.waiting import wait_for
from tests.support.workers import decision, wait_for_key_refresh

pytestmark = pytest.mark.integration


def _send(settings: Settings, topic: str, key: SigningKey, payload: dict[str, Any], typ: str,
          ) -> str:
    """Send ``payload`` signed by ``key``; ``accepted`` or the rejection's reason, once audited."""
    send_all(settings, topic, [OutgoingMessage(None, key.sign(json.dumps(payload).encode(), typ))])
    return wait_for(lambda: decision(settings.database_url, payload["event_id"]), 90,
                    f"a decision on {payload['event_id']}")


def test_a_ledger_key_cannot_file_a_tax_bureau_document_through_the_worker(
    stack_settings: Settings, worker: subprocess.Popen[bytes]
) -> None:
    url = stack_settings.database_url
    ensure_topics(stack_settings)
    key = generate_key("core-ledger", kid=f"core-ledger-bound-{uuid.uuid4().hex[:8]}")
    registry.add_key(url, key.kid, key.source, key.alg, key.public_jwk,
                     typs=[TRANSACTION_V1], department="core-ledger")
    assert registry.key_snapshot(url)[key.kid].typs == frozenset({TRANSACTION_V1})

    # The worker reloads the registry on a timer: probes until it accepts the key's own transaction.
    wait_for_key_refresh(stack_settings, key)

    document = next(d for d in document_payloads(2, now=datetime.now(UTC))
                    if d["agency"] == TAX_BUREAU)
    document = {**document, "source": "core-ledger"}
    assert _send(stack_settings, DOCUMENTS.name(stack_settings), key, document, DOCUMENT_V1
                 ) == "scope_mismatch"
    assert worker.poll() is None

    raw_marker = key.sign(json.dumps(document).encode(), DOCUMENT_V1).split(b".")[1]
    letters = [dict(m.headers() or []).get("attest-reason")
               for m in read_topic(stack_settings, DEAD_LETTER.name(stack_settings))
               if raw_marker in (m.value() or b"")]
    assert letters == [b"scope_mismatch"]
    with engine_for(url).connect() as conn:
        stored = conn.execute(text("SELECT count(*) FROM events WHERE event_id = :e"),
                              {"e": document["event_id"]}).scalar_one()
    assert stored == 0
