"""`attest replay` of nested (encrypted) events: decrypted again with the intake keys held."""

from __future__ import annotations

import uuid

import pytest

from config.settings import Settings
from operations.selection import Selection
from scenarios.government import approval_payload
from schemas.catalog import APPROVAL_V1
from security.intake_keys import ensure_intake_key
from security.keyfiles import generate_key
from security.nested import seal_for_intake
from storage import keys as registry
from storage.events import count_events
from streams.admin import ensure_topics
from streams.producer import OutgoingMessage, send_all, sign_payload
from streams.topics import APPROVALS
from tests.operations.test_replay import run

pytestmark = pytest.mark.integration


def test_a_replay_opens_encrypted_events_and_a_second_changes_nothing(stack_settings: Settings) -> None:
    own = stack_settings.model_copy(update={"topic_prefix": f"e{uuid.uuid4().hex[:6]}.",
                                            "batch_size": 10})
    ensure_topics(own)
    key = generate_key(f"dpo-{uuid.uuid4().hex[:6]}")
    registry.add_key(own.database_url, key.kid, key.source, key.alg, key.public_jwk)
    intake, _ = ensure_intake_key(own.intake_keys_dir)
    payloads = [approval_payload(f"REQ-{i}", "alice", 2, source=key.source) for i in range(6)]
    send_all(own, APPROVALS.name(own), [
        OutgoingMessage(None, seal_for_intake(sign_payload(key, p, APPROVAL_V1), intake.public_jwk))
        for p in payloads])
    ids = [p["event_id"] for p in payloads]

    first = run(own, Selection("approvals"))
    assert first.counts == {"stored": 6}
    assert count_events(own.database_url, ids) == 6
    again = run(own, Selection("approvals"))
    assert again.counts == {"unchanged": 6}
