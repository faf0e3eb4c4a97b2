"""Redelivery after a crash: the same stored message is never re-decided as a rejection."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from agents.intake import IntakeProcessor
from agents.messages import IncomingMessage
from config.settings import Settings
from protection.fields import writer_protector
from scenarios.finance import transaction_payloads
from schemas.catalog import TRANSACTION_V1
from security.keyfiles import generate_key
from security.registry import KeyRecord
from storage.events import count_events
from streams.producer import sign_payload

pytestmark = pytest.mark.integration


async def test_a_stored_message_delivered_again_after_the_window_is_not_rejected(
    stack_settings: Settings,
) -> None:
    key = generate_key(f"redeliver-{uuid.uuid4().hex[:6]}")
    topic = f"{stack_settings.topic_prefix}transactions"
    now = datetime.now(UTC)
    clock = [now]
    intake = IntakeProcessor(
        stack_settings, actor="test", accepted_types={topic: frozenset({TRANSACTION_V1})},
        clock=lambda: clock[0], protector=writer_protector(stack_settings.state_dir, {}),
    )
    intake.replace_keys({key.kid: KeyRecord(key.kid, key.source, key.alg, key.public_jwk)})
    payload = transaction_payloads(1, key.source, now=now)[0]
    token = sign_payload(key, payload, TRANSACTION_V1)
    offset = uuid.uuid4().int % 10**9
    message = IncomingMessage(topic, 0, offset, None, token, now)

    first = await intake.process([message])
    assert len(first.accepted) == 1 and not first.dead_letters

    # The worker crashed before acknowledging; it restarts an hour later with an empty cache.
    clock[0] = now + timedelta(hours=1)
    intake.seen = type(intake.seen)(100)
    again = await intake.process([message])
    assert not again.dead_letters
    assert [(r.action, r.detail.get("redelivered")) for r in again.audit] == [("event.stored", True)]
    assert count_events(stack_settings.database_url, [payload["event_id"]]) == 1

    # Other bytes claiming the same event at another offset are still judged on their own.
    replay = IncomingMessage(topic, 0, offset + 1, None, token, now)
    third = await intake.process([replay])
    assert [d.reason for d in third.dead_letters] == ["stale"]


async def test_other_bytes_at_a_stored_messages_position_are_not_taken_for_a_redelivery(
    stack_settings: Settings,
) -> None:
    # A log that started again (a broker that lost its topics) reuses positions: other bytes
    # claiming the stored event at its very position must be judged, not waved through as
    # our own redelivery. Rows keep only a keyed MAC of their bytes, so the check needs the key.
    key = generate_key(f"redeliver-{uuid.uuid4().hex[:6]}")
    topic = f"{stack_settings.topic_prefix}transactions"
    now = datetime.now(UTC)
    clock = [now]
    intake = IntakeProcessor(
        stack_settings, actor="test", accepted_types={topic: frozenset({TRANSACTION_V1})},
        clock=lambda: clock[0], protector=writer_protector(stack_settings.state_dir, {}),
    )
    intake.replace_keys({key.kid: KeyRecord(key.kid, key.source, key.alg, key.public_jwk)})
    payload = transaction_payloads(1, key.source, now=now)[0]
    offset = uuid.uuid4().int % 10**9
    stored = IncomingMessage(topic, 0, offset, None, sign_payload(key, payload, TRANSACTION_V1), now)
    assert len((await intake.process([stored])).accepted) == 1

    clock[0] = now + timedelta(hours=1)
    intake.seen = type(intake.seen)(100)
    altered = {**payload, "amount": str(payload["amount"]) + "1"}
    other = IncomingMessage(topic, 0, offset, None, sign_payload(key, altered, TRANSACTION_V1), now)
    out = await intake.process([other])
    assert [d.reason for d in out.dead_letters] == ["stale"]
    assert not any(r.detail.get("redelivered") for r in out.audit)
