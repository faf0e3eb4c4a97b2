"""The intake stage shared by every signed-event topic: verify, dedupe, store, decide.

One class for transactions, documents and approvals, so every topic gets the same checks.
It knows nothing of Faust: it takes ``IncomingMessage`` batches and returns what must be
published, which keeps it testable against a real Postgres without a broker.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import DataError, IntegrityError, StatementError

from agents.messages import BatchOutput, DeadLetter, IncomingMessage
from agents.retry import until_stored
from config.settings import Settings
from protection.fields import FieldProtector
from schemas.audit import AuditAction, AuditRecord, audit_id_for
from security.errors import Rejection
from security.intake_keys import HeldIntakeKeys
from security.jws import claimed_event_id
from security.nested import IntakeKeys, inner_token, is_nested, verify_message
from security.reasons import RejectReason
from security.registry import KeySnapshot
from security.verification import VerificationPolicy, VerifiedEvent
from storage.events import (
    Delivery,
    StoredEvent,
    StoreOutcome,
    already_stored,
    protector_message_key,
    store_events,
)

log = logging.getLogger("attest.intake")


def _caused_by_a_value(exc: BaseException) -> bool:
    """Whether a storage failure is about the data (one row can cause it), not the system.

    An outage is ``DatabaseUnavailable`` and is retried before it gets here; a missing
    table is a ``ProgrammingError`` and stops the worker. A row refused by mistake is a
    dead letter that `attest dlq retry` brings back, so erring towards isolation loses nothing.
    """
    # psycopg2 raises a bare ValueError for U+0000 in a text parameter, before sending.
    if isinstance(exc, DataError | IntegrityError | UnicodeError | ValueError):
        return True
    return isinstance(exc, StatementError) and isinstance(exc.orig, UnicodeError | ValueError)


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class SeenEvents:
    """A bounded in-memory record of accepted event_ids and where each was read.

    The fast path of replay defence; the events table's primary key is the authority (a
    replay the cache has forgotten is refused when its row conflicts). Compact, because a
    soak found it one of intake's growing parts: an event id is kept as the 16 bytes of its
    UUID and a position as one integer, in a dict with a ring of ids for eviction, first in
    first out (about 145 bytes an entry, against ~226 for strings in an ``OrderedDict``).
    Bytes, not the UUID's integer: Python hashes an int without a per-process key, so a
    producer with a valid key could send ids that all collide and slow every lookup.
    """

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._where: dict[bytes | str, int] = {}
        self._order: deque[bytes | str] = deque()
        self._topics: list[str] = []  # a position's topic, by index

    @staticmethod
    def _key(event_id: str) -> bytes | str:
        # Only a canonical UUID becomes bytes; any other id stays a string (a str never equals
        # a bytes, so the two cannot collide).
        return bytes.fromhex(event_id.replace("-", "")) if _UUID.fullmatch(event_id) else event_id

    def position_of(self, event_id: str) -> str | None:
        packed = self._where.get(self._key(event_id))
        if packed is None:
            return None
        topic, partition, offset = packed >> 96, (packed >> 64) & 0xFFFFFFFF, packed & (2**64 - 1)
        return f"{self._topics[topic]}/{partition}/{offset}"

    def add(self, event_id: str, message: IncomingMessage) -> None:
        # A position outside Kafka's ranges (a replayed dead letter's headers are the
        # sender's) is not packed: it is left to the database, which is the authority anyway.
        if self._capacity <= 0 or not (0 <= message.partition < 2**32 and 0 <= message.offset < 2**64):
            return
        try:
            topic = self._topics.index(message.topic)
        except ValueError:
            topic = len(self._topics)
            self._topics.append(message.topic)
        key = self._key(event_id)
        if key not in self._where:
            self._order.append(key)
        self._where[key] = (topic << 96) | (message.partition << 64) | message.offset
        while len(self._order) > self._capacity:
            self._where.pop(self._order.popleft(), None)


def _event_id_hint(token: bytes | None) -> str | None:
    """The event_id a rejected JWS claims, for correlation only (never trusted).

    Searched in the raw payload bytes, so a tampered token that no longer parses as JSON
    still correlates with the event it pretended to be. ``token`` is the JWS: for a nested
    message, the one inside the JWE (``None`` when it cannot be opened).
    """
    return None if token is None else claimed_event_id(token)


class IntakeProcessor:
    """Verifies and stores batches from the intake topics; owns the key snapshot."""

    def __init__(
        self,
        settings: Settings,
        actor: str,
        accepted_types: dict[str, frozenset[str]],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        protector: FieldProtector | None = None,
        check_freshness: bool = True,
        intake_keys: IntakeKeys | None = None,
    ) -> None:
        """``protector`` seals protected fields before they are stored (see docs/security.md);
        the worker always passes one. Without it, payloads are stored in clear (tests only).
        ``check_freshness=False`` turns the issued_at window off: only for an operator replay,
        which is audited as such. ``intake_keys`` open nested (encrypted) tokens; by default
        the keys of ``settings.intake_keys_dir``, re-read when a token names a new kid and
        every ``keyring_refresh_s`` (a deleted key file is dropped).
        """
        self._settings = settings
        self._actor = actor
        self._clock = clock
        self._protector = protector
        self._policies = {
            topic: VerificationPolicy(
                max_event_bytes=settings.max_event_bytes,
                max_clock_skew=(timedelta(seconds=settings.max_clock_skew_s)
                                if check_freshness else None),
                accepted_types=types,
            )
            for topic, types in accepted_types.items()
        }
        self.keys: KeySnapshot = {}
        self.seen = SeenEvents(settings.seen_cache_size)
        self._intake_keys: IntakeKeys = (intake_keys if intake_keys is not None
                                         else HeldIntakeKeys(settings.intake_keys_dir,
                                                             refresh_s=settings.keyring_refresh_s))

    def replace_keys(self, snapshot: KeySnapshot) -> None:
        """Swap in a fresh registry snapshot (atomic: one reference assignment)."""
        self.keys = snapshot

    # -- the decision, pure but for the seen-cache ----------------------------------------

    def verify_batch(
        self, batch: list[IncomingMessage]
    ) -> tuple[list[tuple[IncomingMessage, VerifiedEvent]], list[tuple[IncomingMessage, Rejection]]]:
        now = self._clock()
        accepted: list[tuple[IncomingMessage, VerifiedEvent]] = []
        rejected: list[tuple[IncomingMessage, Rejection]] = []
        in_batch: dict[str, str] = {}
        for message in batch:
            try:
                event, _ = verify_message(message.value, self.keys, self._intake_keys, now,
                                          self._policies[message.topic],
                                          reached_broker_at=message.broker_time)
                earlier = in_batch.get(event.event_id) or self.seen.position_of(event.event_id)
                if earlier is not None and earlier != message.position:
                    raise Rejection(
                        RejectReason.REPLAYED,
                        f"event_id {event.event_id} was already accepted at {earlier}",
                    )
                in_batch[event.event_id] = message.position
                accepted.append((message, event))
            except Rejection as rejection:
                rejected.append((message, rejection))
            except Exception as exc:  # noqa: BLE001 - one bad event must never stop the stream
                log.exception("unexpected error verifying %s", message.position)
                rejected.append(
                    (message, Rejection(RejectReason.MALFORMED, f"unprocessable: {type(exc).__name__}"))
                )
        return accepted, rejected

    # -- the batch, with storage -----------------------------------------------------------

    async def _drop_redeliveries(
        self, rejected: list[tuple[IncomingMessage, Rejection]]
    ) -> tuple[list[tuple[IncomingMessage, Rejection]], list[tuple[IncomingMessage, str]]]:
        """Split off rejections of messages that were stored on an earlier delivery.

        A batch stored just before a crash is delivered again on restart; by then the clock
        may have moved past the skew window, or the key been revoked. Re-deciding would
        dead-letter an event that is stored, so exactly these bytes at exactly this position
        are recognised as a redelivery instead.
        """
        def delivery(message: IncomingMessage) -> Delivery | None:
            claimed = self._hint(message)
            if not (claimed and _UUID.fullmatch(claimed)):
                return None
            return (claimed, message.topic, message.partition, message.offset,
                    hashlib.sha256(message.value).digest())

        claims = [(message, rejection, delivery(message)) for message, rejection in rejected]
        candidates = [d for _, _, d in claims if d is not None]
        if not candidates:
            return rejected, []
        url = self._settings.database_url
        # Rows keep a keyed MAC of their bytes (events.message_mac): without the key only their
        # position would be compared, and a replay reusing a redelivered position would pass.
        key = protector_message_key(self._protector) if self._protector is not None else None
        stored = await until_stored(lambda: already_stored(url, candidates, message_key=key),
                                    self._settings.db_retry_max_s, "checking redeliveries")
        kept = [(m, rejection) for m, rejection, d in claims if d not in stored]
        redelivered = [(m, d[0]) for m, _, d in claims if d is not None and d in stored]
        return kept, redelivered

    async def process(self, batch: list[IncomingMessage]) -> BatchOutput:
        """Decide every message of the batch; durable writes happen before this returns."""
        # In a thread: the Ed25519 check (most of verification) releases the GIL, so with
        # ATTEST_INTAKE_CONCURRENCY > 1 one batch is verified while the one before it is
        # stored and published, and the event loop stays free meanwhile. verify_batch only
        # reads the seen-cache; a lookup racing another batch's add can miss, and the
        # events table's primary key then refuses the replay (SeenEvents' docstring).
        accepted, rejected = await asyncio.to_thread(self.verify_batch, batch)
        rejected, redelivered = await self._drop_redeliveries(rejected)
        verified_at = self._clock()
        rows = [
            StoredEvent(
                event_id=event.event_id, typ=event.typ, source=event.source, kid=event.kid,
                topic=message.topic, partition=message.partition, offset=message.offset,
                issued_at=event.issued_at, received_at=message.received_at,
                verified_at=verified_at, payload=event.payload,
                message_sha256=hashlib.sha256(message.value).digest(),
            )
            for message, event in accepted
        ]
        outcome, unstorable = await self._store_isolating(rows)
        output = BatchOutput(stored=len(outcome.inserted))
        for message, event in accepted:
            if event.event_id in unstorable:
                rejected.append((message, Rejection(RejectReason.UNSTORABLE,
                                                    unstorable[event.event_id])))
                continue
            if event.event_id in outcome.replayed:
                rejected.append(
                    (message, Rejection(RejectReason.REPLAYED,
                                        f"event_id {event.event_id} is already stored"))
                )
                continue
            self.seen.add(event.event_id, message)
            output.accepted.append((message, event))
            output.audit.extend(self._accepted_records(message, event))
        for message, event_id in redelivered:
            output.audit.append(self._redelivered_record(message, event_id))
        for message, rejection in rejected:
            output.dead_letters.append(
                DeadLetter(message, rejection.reason.value, rejection.detail, verified_at)
            )
            output.audit.append(self._rejected_record(message, rejection, verified_at))
        return output

    async def _store(self, rows: list[StoredEvent]) -> StoreOutcome:
        url, protector = self._settings.database_url, self._protector
        return await until_stored(lambda: store_events(url, rows, protector=protector),
                                  self._settings.db_retry_max_s, "storing events")

    async def _store_isolating(
        self, rows: list[StoredEvent]
    ) -> tuple[StoreOutcome, dict[str, str]]:
        """Store the batch; if the database refuses a value, find the rows that cause it.

        One hostile but validly signed row (a value Postgres cannot hold) used to fail its
        whole batch, which was then redelivered forever and stopped every worker. The batch
        is halved until each refusal is pinned on single rows, which become `unstorable`
        rejections; everything else is stored. Only failures about values are isolated
        (``_caused_by_a_value``); any other error propagates, the worker stops and nothing is
        acknowledged.
        """
        try:
            return await self._store(rows), {}
        except Exception as exc:  # noqa: BLE001 - classified right below
            if not _caused_by_a_value(exc):
                raise
            first = exc
        if len(rows) == 1:
            detail = f"the database refused the row: {type(first).__name__}"
            log.warning("event %s is unstorable (%s)", rows[0].event_id, type(first).__name__)
            return StoreOutcome(frozenset(), frozenset(), frozenset()), {rows[0].event_id: detail}
        middle = len(rows) // 2
        left, left_bad = await self._store_isolating(rows[:middle])
        right, right_bad = await self._store_isolating(rows[middle:])
        merged = StoreOutcome(left.inserted | right.inserted, left.redelivered | right.redelivered,
                              left.replayed | right.replayed)
        return merged, {**left_bad, **right_bad}

    def _hint(self, message: IncomingMessage) -> str | None:
        """The event_id a rejected message claims (inside its JWE when it is nested)."""
        return _event_id_hint(inner_token(message.value, self._intake_keys,
                                          self._settings.max_event_bytes))

    def _position(self, message: IncomingMessage) -> dict[str, object]:
        return {
            "source_topic": message.topic,
            "source_partition": message.partition,
            "source_offset": message.offset,
        }

    def _accepted_records(self, message: IncomingMessage, event: VerifiedEvent) -> list[AuditRecord]:
        common = {
            "actor": self._actor,
            "correlation_id": event.event_id,
            "subject_ids": [event.event_id],
            **self._position(message),
        }
        return [
            AuditRecord(
                audit_id=audit_id_for(AuditAction.EVENT_ACCEPTED, event.event_id, message.position),
                action=AuditAction.EVENT_ACCEPTED,
                detail={"kid": event.kid, "alg": event.alg, "typ": event.typ,
                        "source": event.source, "encrypted": is_nested(message.value)},
                **common,
            ),
            AuditRecord(
                audit_id=audit_id_for(AuditAction.EVENT_STORED, event.event_id, message.position),
                action=AuditAction.EVENT_STORED,
                detail={"table": "events", "fields_encrypted": self._protector is not None},
                **common,
            ),
        ]

    def _redelivered_record(self, message: IncomingMessage, event_id: str) -> AuditRecord:
        # Same id as the first delivery's event.stored record: stored once by the sink, and
        # present even if the crash came before that record was published.
        return AuditRecord(
            audit_id=audit_id_for(AuditAction.EVENT_STORED, event_id, message.position),
            actor=self._actor, action=AuditAction.EVENT_STORED, correlation_id=event_id,
            subject_ids=[event_id], detail={"table": "events", "redelivered": True},
            **self._position(message),
        )

    def _rejected_record(
        self, message: IncomingMessage, rejection: Rejection, at: datetime
    ) -> AuditRecord:
        hint = self._hint(message)
        return AuditRecord(
            # The bytes' hash as well as the position: a redelivery gets the same id, but a
            # recreated topic (or a restarted in-memory broker) reuses offsets for new messages.
            audit_id=audit_id_for(AuditAction.EVENT_REJECTED, message.position,
                                  hashlib.sha256(message.value).hexdigest()),
            time=at,
            actor=self._actor,
            action=AuditAction.EVENT_REJECTED,
            outcome="rejected",
            reason=rejection.reason.value,
            correlation_id=hint,
            subject_ids=[hint] if hint else [],
            detail={"detail": rejection.detail[:500], "bytes": len(message.value)},
            **self._position(message),
        )
