"""The enrichment stage follows intake: it classifies exactly what intake stored, from the
same bytes, and never runs ahead of intake's committed offsets (real Postgres)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from agents.enrichment import Enrichment, EnrichmentStage
from agents.intake import IntakeProcessor
from agents.messages import IncomingMessage
from config.settings import Settings
from inference.lanes import Priority
from inference.tasks import Classification
from protection.fields import writer_protector
from scenarios.finance import transaction_payloads
from schemas.catalog import TRANSACTION_V1
from security.keyfiles import generate_key
from security.registry import KeyRecord
from streams.producer import sign_payload, tamper
from streams.topics import TRANSACTIONS

pytestmark = pytest.mark.integration


class LabelEverything:
    """A classifier that records what it was asked: the test is about which events reach
    the model, not about the model (tests/agents/test_enrichment.py runs the real one)."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    async def classify(self, task: str, texts: list[str],
                       priority: Priority = Priority.LIVE) -> list[Classification]:
        self.texts.extend(texts)
        return [Classification("other", 0.5, "test-model", task) for _ in texts]


async def test_only_what_intake_stored_is_classified_and_undecided_messages_wait(
    stack_settings: Settings,
) -> None:
    key = generate_key(f"stage-{uuid.uuid4().hex[:6]}")
    topic = TRANSACTIONS.name(stack_settings)
    intake = IntakeProcessor(stack_settings, actor="test",
                             accepted_types={topic: frozenset({TRANSACTION_V1})},
                             protector=writer_protector(stack_settings.state_dir, {}))
    intake.replace_keys({key.kid: KeyRecord(key.kid, key.source, key.alg, key.public_jwk)})
    now = datetime.now(UTC)
    payloads = transaction_payloads(4, key.source, now=now)
    tokens = [sign_payload(key, p, TRANSACTION_V1) for p in payloads]
    tokens[1] = tamper(tokens[1])
    base = uuid.uuid4().int % 10**9
    partition = 1
    messages = [IncomingMessage(topic, partition, base + i, None, t, now) for i, t in enumerate(tokens)]
    # Intake has decided the first three; the fourth is still ahead of it.
    await intake.process(messages[:3])

    calls: list[list[tuple[str, int]]] = []
    caught_up = False

    def progress(positions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        calls.append(positions)
        return {(topic, partition): base + (4 if caught_up else 3)}

    classifier = LabelEverything()
    stage = EnrichmentStage(stack_settings, Enrichment(stack_settings, classifier, actor="test"),
                            progress, poll_s=0.01)
    running = asyncio.create_task(stage.process(messages))
    while len(calls) < 3:
        await asyncio.sleep(0.01)
    assert not running.done(), "the fourth message is undecided: the stage must wait for intake"
    await intake.process(messages[3:])
    caught_up = True
    output = await asyncio.wait_for(running, 30)
    classified = {r.correlation_id for r in output.audit}
    # Labels are read from confidential text: the append-only audit log does not carry them.
    assert all(set(r.detail) == {"task", "model_version"} for r in output.audit)
    # The tampered one was rejected by intake: intake moved past it, it is never classified.
    assert classified == {payloads[i]["event_id"] for i in (0, 2, 3)}
    assert len(classifier.texts) == 3

    # Other bytes claiming a stored event (a replay at another offset) are not classified.
    replay = IncomingMessage(topic, partition, base + 10, None, tokens[0], now)
    stage_after = EnrichmentStage(stack_settings,
                                  Enrichment(stack_settings, LabelEverything(), actor="test"),
                                  lambda positions: {(topic, partition): base + 11}, poll_s=0.01)
    assert (await stage_after.process([replay])).audit == []


async def test_unsigned_bytes_claiming_a_non_uuid_event_id_are_skipped_not_fatal(
    stack_settings: Settings,
) -> None:
    """Review finding H3: enrichment reads the intake topics unverified, and a non-UUID
    event_id reached the uuid lookup, which raised and stopped the stage."""
    import base64
    import json

    def part(value: dict[str, object]) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=")

    forged = b".".join([
        part({"alg": "Ed25519", "kid": "k", "typ": TRANSACTION_V1}),
        part({"event_id": "not-a-uuid", "source": "x", "issued_at": "2026-12-01T00:00:00Z"}),
        b"c2ln",
    ])
    topic = TRANSACTIONS.name(stack_settings)
    message = IncomingMessage(topic, 0, 1, None, forged, datetime.now(UTC))
    stage = EnrichmentStage(stack_settings,
                            Enrichment(stack_settings, LabelEverything(), actor="test"),
                            lambda positions: {(topic, 0): 2}, poll_s=0.01)
    assert (await stage.process([message])).audit == []


async def test_a_message_the_broker_no_longer_holds_is_given_up_after_two_checks(
    stack_settings: Settings,
) -> None:
    """The broker-restart fault: the embedded broker forgot its log, intake's committed offsets
    start again from nothing, and a message held from the old log would be waited for for
    ever (and hold the rebalance that follows). Signed and valid, but never stored."""
    key = generate_key(f"lost-{uuid.uuid4().hex[:6]}")
    topic = TRANSACTIONS.name(stack_settings)
    now = datetime.now(UTC)
    (payload,) = transaction_payloads(1, key.source, now=now)
    held_from_old_log = IncomingMessage(topic, 0, 10**9 + uuid.uuid4().int % 10**6, None,
                                        sign_payload(key, payload, TRANSACTION_V1), now)
    asked: list[int] = []
    answers = iter([None, False, True, False, False])  # unknown, missing, held, missing twice

    def log_check(t: str, partition: int, offset: int, sha256: bytes) -> bool | None:
        assert (t, partition, offset) == (topic, 0, held_from_old_log.offset)
        asked.append(offset)
        return next(answers)

    stage = EnrichmentStage(stack_settings, Enrichment(stack_settings, LabelEverything(), actor="test"),
                            lambda positions: {}, poll_s=0.001, log_check=log_check,
                            probe_after_s=0.0)
    output = await asyncio.wait_for(stage.process([held_from_old_log]), 30)
    assert output.audit == []
    # Gave up only after two "missing" answers in a row: "held" in between started again.
    assert len(asked) == 5


async def test_without_a_log_check_an_undecided_message_keeps_waiting(stack_settings: Settings) -> None:
    key = generate_key(f"wait-{uuid.uuid4().hex[:6]}")
    topic = TRANSACTIONS.name(stack_settings)
    (payload,) = transaction_payloads(1, key.source, now=datetime.now(UTC))
    message = IncomingMessage(topic, 0, 10**9, None, sign_payload(key, payload, TRANSACTION_V1),
                              datetime.now(UTC))
    stage = EnrichmentStage(stack_settings, Enrichment(stack_settings, LabelEverything(), actor="test"),
                            lambda positions: {}, poll_s=0.001,
                            log_check=lambda *_: False, probe_after_s=3600)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(stage.process([message]), 1.0)
