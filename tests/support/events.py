"""Events built from payloads: what intake hands to storage, and what verification yields."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

from schemas.catalog import TRANSACTION_V1
from security.verification import VerifiedEvent
from storage.events import StoredEvent


def stored_event(payload: dict[str, Any], typ: str = TRANSACTION_V1, *, offset: int = 0,
                 topic: str = "t.transactions", partition: int = 0, kid: str = "test-kid",
                 source: str | None = None, message: bytes | None = None) -> StoredEvent:
    """One StoredEvent for ``payload`` at (``topic``, ``partition``, ``offset``), received now.

    ``source`` defaults to the payload's, else ``core-ledger``; ``message``, when given, is
    the Kafka message the event came in (its hash tells a redelivery from a replay).
    """
    now = datetime.now(UTC)
    extra = {} if message is None else {"message_sha256": hashlib.sha256(message).digest()}
    return StoredEvent(
        event_id=str(payload["event_id"]), typ=typ,
        source=source or str(payload.get("source", "core-ledger")), kid=kid,
        topic=topic, partition=partition, offset=offset, issued_at=now, received_at=now,
        verified_at=now, payload=payload, **extra,
    )


def stored_events(payloads: list[dict[str, Any]], typ: str, topic: str | None = None) -> list[StoredEvent]:
    """StoredEvents for payloads, each at its own (new) topic position."""
    topic = topic or f"test.{uuid.uuid4().hex[:8]}"
    return [stored_event(p, typ, topic=topic, offset=i) for i, p in enumerate(payloads)]


def verified_event(payload: dict[str, Any], typ: str = TRANSACTION_V1, *, source: str = "core-ledger",
                   kid: str = "k", alg: str = "Ed25519") -> VerifiedEvent:
    """A VerifiedEvent for ``payload``, issued now; the payload gets an event_id if it has none."""
    payload = {"event_id": str(uuid.uuid4()), **payload}
    return VerifiedEvent(event_id=str(payload["event_id"]), source=source, kid=kid, alg=alg, typ=typ,
                         issued_at=datetime.now(UTC), payload=payload)
