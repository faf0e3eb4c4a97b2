"""Review finding: "this source must encrypt" lived only in the worker's environment
(``ATTEST_ENCRYPTED_SOURCES``), so ``attest replay`` and ``attest dlq retry``, which build
their own intake from the operator's settings, stored the plain token the worker had
dead-lettered. The rule is now the signing key's ``encrypted_only`` flag in the registry,
which every path loads: no setting of the operator's process can leave it out.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime

import pytest

from agents.messages import IncomingMessage
from config.settings import Settings
from devstack.stack import read_stack
from operations.replay import intake_processor
from operations.selection import Selection
from scenarios.government import approval_payload
from schemas.catalog import APPROVAL_V1
from security.intake_keys import ensure_intake_key
from security.keyfiles import SigningKey, generate_key
from security.nested import seal_for_intake
from storage import keys as registry
from storage.events import count_events
from streams.admin import ensure_topics
from streams.producer import OutgoingMessage, send_all, sign_payload
from streams.topics import APPROVALS
from tests.operations.test_replay import run

pytestmark = pytest.mark.integration


def _flagged_key(settings: Settings) -> SigningKey:
    key = generate_key(f"sealed-{uuid.uuid4().hex[:6]}")
    registry.add_key(settings.database_url, key.kid, key.source, key.alg, key.public_jwk,
                     department=key.source, encrypted_only=True)
    return key


def test_a_replay_without_any_setting_refuses_a_plain_token_of_a_key_that_requires_encryption(
        stack_settings: Settings) -> None:
    own = stack_settings.model_copy(update={"topic_prefix": f"q{uuid.uuid4().hex[:6]}.",
                                            "batch_size": 10})
    assert not hasattr(own, "encryption_required_sources")  # nothing in the operator's settings
    ensure_topics(own)
    key = _flagged_key(own)
    intake, _ = ensure_intake_key(own.intake_keys_dir)
    plain, sealed = (approval_payload(f"REQ-{i}", "alice", 2, source=key.source) for i in range(2))
    send_all(own, APPROVALS.name(own), [
        OutgoingMessage(None, sign_payload(key, plain, APPROVAL_V1)),
        OutgoingMessage(None, seal_for_intake(sign_payload(key, sealed, APPROVAL_V1), intake.public_jwk)),
    ])

    result = run(own, Selection("approvals"))
    assert result.counts == {"stored": 1, "rejected:encryption_required": 1}
    assert count_events(own.database_url, [plain["event_id"]]) == 0
    assert count_events(own.database_url, [sealed["event_id"]]) == 1


def test_a_dead_letter_retry_refuses_it_too_and_the_flag_alone_decides(stack_settings: Settings) -> None:
    """``attest dlq retry`` processes letters with ``intake_processor(..., check_freshness=True)``."""
    key = _flagged_key(stack_settings)
    payload = approval_payload("REQ-R", "alice", 2, source=key.source)
    now = datetime.now(UTC)
    letter = IncomingMessage(APPROVALS.name(stack_settings), 0, 10**9 + uuid.uuid4().int % 10**6,
                             None, sign_payload(key, payload, APPROVAL_V1), now, now)

    retry = intake_processor(stack_settings, "operator:test", check_freshness=True)
    out = asyncio.run(retry.process([letter]))
    assert [d.reason for d in out.dead_letters] == ["encryption_required"] and out.stored == 0
    assert count_events(stack_settings.database_url, [payload["event_id"]]) == 0

    # The registry, not the process, decides: once the flag is off, the same letter is stored.
    changed = registry.set_encrypted_only(stack_settings.database_url, key.kid, False)
    assert changed is not None and changed[1] and not changed[0].encrypted_only
    again = intake_processor(stack_settings, "operator:test", check_freshness=True)
    assert asyncio.run(again.process([letter])).stored == 1
    assert count_events(stack_settings.database_url, [payload["event_id"]]) == 1


def test_the_worker_login_reads_the_flag(stack_settings: Settings) -> None:
    """The worker's own login (least privilege) loads the registry with the new column."""
    if os.environ.get("ATTEST_DATABASE_URL"):
        pytest.skip("the session runs against an external Postgres, not the embedded one")
    info = read_stack(stack_settings)
    assert info is not None and info.worker_database_url
    key = _flagged_key(stack_settings)
    assert registry.key_snapshot(info.worker_database_url)[key.kid].encrypted_only
