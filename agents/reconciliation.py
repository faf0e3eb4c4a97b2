"""The reconciliation stage: verified transactions in, matches and breaks out (no Faust here).

It takes what intake accepted in a batch (``(IncomingMessage, VerifiedEvent)`` pairs, the
payloads verified and stored moments before), turns each transaction into a matcher record
(the account replaced by its blind index), and steps the ``Reconciler``. The decrypted values
live only in the matcher's memory and, between batches, in its state sealed with the
reconciliation key (``reconcile.sealing``): one transaction stores the step's matches, breaks
and the new sealed state, so a restarted worker resumes exactly where the stored results end.

``process`` returns the audit records (one per match and per break) and the messages for the
``reconciliation`` topic; the caller publishes both, as with intake.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np

from agents.messages import IncomingMessage
from agents.retry import until_stored
from config.settings import Settings
from protection.blind_index import BlindIndexKey, blind_index, message_mac_key
from reconcile.cascade import PairScorer
from reconcile.config import MatchConfig
from reconcile.government import GOVERNMENT_PAIRING, SOCIAL_SECURITY, STORED_REASON_LENGTH, TAX_BUREAU
from reconcile.models import Break, Match, Status
from reconcile.records import record_from_payload
from reconcile.sealing import StateKey
from reconcile.windows import Reconciler, StepResult
from schemas.audit import AuditAction, AuditRecord, audit_id_for
from schemas.catalog import DOCUMENT_V1, TRANSACTION_V1
from security.verification import VerifiedEvent
from storage.reconciliation import BreakRow, MatchRow, StaleState, load_state, reconciled_ids, save_step
from streams.topics import TRANSACTIONS

log = logging.getLogger("attest.reconciliation")

STATE_NAME = "finance"
#: Document ids the consistency stage remembers (to recognise a redelivery); oldest dropped.
SEEN_DOCUMENTS = 200_000
#: How often a step is run again from a reloaded state when the stored one changed under it.
STALE_RETRIES = 5
Embedder = Callable[[Sequence[str]], Awaitable[np.ndarray]]


@dataclass
class ReconOutput:
    """What one batch wants published: audit records and reconciliation-topic messages."""

    audit: list[AuditRecord] = field(default_factory=list)
    messages: list[tuple[bytes, bytes]] = field(default_factory=list)
    matches: list[Match] = field(default_factory=list)
    breaks: list[Break] = field(default_factory=list)
    discrepancies: list[Any] = field(default_factory=list)


def model_scorer(embed: Embedder, loop: asyncio.AbstractEventLoop, timeout_s: float) -> PairScorer:
    """A blocking ``PairScorer`` over the async model pool, for the matcher's worker thread.

    Each unique text is embedded once per call; a pair's score is its cosine clipped to [0, 1].
    """
    def score(pairs: Sequence[tuple[str, str]]) -> list[float]:
        texts = sorted({t for pair in pairs for t in pair})
        vectors = asyncio.run_coroutine_threadsafe(embed(texts), loop).result(timeout_s)
        vectors = np.asarray(vectors, dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.where(norms == 0, 1, norms)
        where = {t: i for i, t in enumerate(texts)}
        return [max(0.0, float(vectors[where[a]] @ vectors[where[b]])) for a, b in pairs]

    return score


async def reloading_stale_state(step: Callable[[], Awaitable[ReconOutput]],
                                drop_loaded: Callable[[], None], what: str) -> ReconOutput:
    """Run ``step``; when the stored state changed since it was loaded (``StaleState``), drop
    what was loaded (the step then loads it again) and run it again, up to STALE_RETRIES times."""
    for attempt in range(STALE_RETRIES + 1):
        try:
            return await step()
        except StaleState:
            if attempt == STALE_RETRIES:
                raise
            log.info("%s changed under the worker; reloading", what)
            drop_loaded()
    raise AssertionError("unreachable")


class ReconciliationStage:
    """Feeds verified transactions to the matcher and makes its results durable."""

    def __init__(self, settings: Settings, actor: str, index_key: BlindIndexKey,
                 embed: Embedder | None = None, name: str = STATE_NAME) -> None:
        self._settings = settings
        self._actor = actor
        self._index_key = index_key
        self._state_key = StateKey.derive(index_key.material)
        self._embed = embed if settings.recon_model_similarity else None
        self._name = name
        self._version = 0
        self.reconciler: Reconciler | None = None
        #: The newest value date seen per topic partition. The watermark is the oldest of
        #: them: partitions are consumed unevenly, and one that runs ahead must not close
        #: windows whose partners still wait in another.
        self._marks: dict[str, str] = {}
        self._loading = asyncio.Lock()

    def _context(self) -> bytes:
        return f"recon_state|{self._name}".encode()

    def _account_index(self, account: str) -> str:
        return blind_index(self._index_key, account).hex()

    async def _load(self) -> Reconciler:
        async with self._loading:  # two agents (two topics) may ask first at the same time
            return await self._load_once()

    async def _load_once(self) -> Reconciler:
        if self.reconciler is None:
            cfg = MatchConfig.from_settings(self._settings)
            reconciler = Reconciler(cfg, fuzzy=self._settings.recon_fuzzy)
            url = self._settings.database_url
            stored = await until_stored(lambda: load_state(url, self._name), self._settings.db_retry_max_s,
                                        "loading reconciliation state")
            if stored is not None:
                sealed, self._version = stored
                state = json.loads(self._state_key.open(sealed, self._context()))
                reconciler.restore(state)
                self._marks = dict(state.get("partition_marks", {}))
            self.reconciler = reconciler
        return self.reconciler

    async def process(self, accepted: Sequence[tuple[IncomingMessage, VerifiedEvent]],
                      flush: bool = False) -> ReconOutput:
        """Match the batch's transactions; results are stored before this returns.

        When the stored state changed since it was loaded (``attest forget`` removed a
        subject's pending records), nothing of the step was stored: the state is reloaded and
        the batch matched again from it, so the old state is never written back.
        """
        def drop_loaded() -> None:
            self.reconciler, self._marks = None, {}

        return await reloading_stale_state(lambda: self._process(accepted, flush), drop_loaded,
                                           f"reconciliation state {self._name!r}")

    async def _process(self, accepted: Sequence[tuple[IncomingMessage, VerifiedEvent]],
                       flush: bool) -> ReconOutput:
        reconciler = await self._load()
        sources = {s for pair in reconciler.pairings for s in pair}
        records = []
        for message, event in accepted:
            if event.typ != TRANSACTION_V1 or event.source not in sources:
                continue
            try:
                record = record_from_payload(event.payload, self._account_index)
            except (KeyError, ValueError, ArithmeticError):  # verified, so only a schema gap
                log.warning("event %s cannot be reconciled", event.event_id)
                continue
            records.append(record)
            where, day = f"{message.topic}/{message.partition}", record.value_date.isoformat()
            self._marks[where] = max(self._marks.get(where, day), day)
        if not records and not flush:
            return ReconOutput()
        old = {r.record_id for r in reconciler.forgotten(records)}
        if old:
            url = self._settings.database_url
            done = await until_stored(lambda: reconciled_ids(url, sorted(old)), self._settings.db_retry_max_s,
                                      "checking old records")
            records = [r for r in records if r.record_id not in done]
        reconciler.add(records)
        if self._embed is not None and reconciler.fuzzy:
            reconciler.similarity = model_scorer(self._embed, asyncio.get_running_loop(),
                                                 self._settings.inference_timeout_s)
        watermark = self._watermark()
        step: StepResult = await asyncio.to_thread(
            reconciler.flush if flush else (lambda: reconciler.step(watermark)))
        return await self._store(step)

    def _watermark(self) -> date:
        """The oldest partition's newest value date, once every partition has spoken."""
        partitions = TRANSACTIONS.partition_count(self._settings)
        topics: dict[str, list[str]] = {}
        for where, day in self._marks.items():
            topics.setdefault(where.rsplit("/", 1)[0], []).append(day)
        days = [d for marks in topics.values() if len(marks) >= partitions for d in marks]
        if not days or any(len(marks) < partitions for marks in topics.values()):
            return date.min  # nothing closes yet
        return date.fromisoformat(min(days))

    async def process_batch(self, batch: Sequence[IncomingMessage], output: Any) -> ReconOutput:
        """``process`` for an intake batch and its ``BatchOutput``, redeliveries included.

        A message intake neither accepted nor dead-lettered was stored on an earlier delivery
        (a crash came between intake's commit and this stage's): intake checked that these
        exact bytes at this position were verified and stored, so their payload is read
        as is and handed on too. Records the matcher already took are recognised by id.
        """
        return await self.process([*output.accepted, *redelivered(batch, output)])

    async def flush(self) -> ReconOutput:
        """Close every window now (the end of a bounded run, e.g. a benchmark or a demo)."""
        return await self.process([], flush=True)

    async def _store(self, step: StepResult) -> ReconOutput:
        assert self.reconciler is not None
        matches = [self._match_row(m) for m in step.matches]
        breaks = [self._break_row(b) for b in step.breaks]
        state = {**self.reconciler.state(), "partition_marks": self._marks}
        sealed = self._state_key.seal(json.dumps(state).encode(), self._context())
        self._version += 1
        url, version = self._settings.database_url, self._version
        await until_stored(lambda: save_step(url, self._name, sealed, version, matches, breaks),
                           self._settings.db_retry_max_s, "storing reconciliation results")
        out = ReconOutput(matches=step.matches, breaks=step.breaks)
        for m in step.matches:
            out.audit.append(match_record(m, self._actor))
            out.messages.append((m.match_id.encode(), json.dumps(match_message(m)).encode()))
        for b in step.breaks:
            out.audit.append(break_record(b, self._actor))
            out.messages.append((b.break_id.encode(), json.dumps(break_message(b)).encode()))
        return out

    def _seal_text(self, text: str, what: str, row_id: str) -> bytes:
        return self._state_key.seal(text.encode(), f"{what}|{row_id}".encode())

    def _match_row(self, m: Match) -> MatchRow:
        return MatchRow(
            match_id=m.match_id, pairing=m.pairing, stage=m.stage.value, rule=m.rule, score=m.score,
            kind=m.kind, status=m.status.value, left_ids=m.left_ids, right_ids=m.right_ids,
            currency=m.currency,
            difference_sealed=self._seal_text(str(m.difference), "difference", m.match_id),
        )

    def _break_row(self, b: Break) -> BreakRow:
        return BreakRow(
            break_id=b.break_id, pairing=b.pairing, record_id=b.record_id, source=b.source,
            reason=b.reason.value, currency=b.currency,
            amount_sealed=self._seal_text(str(b.amount), "amount", b.break_id),
            detail_sealed=self._seal_text(b.detail, "detail", b.break_id), related_ids=b.related_ids,
        )

    def open_amount(self, sealed: bytes | None, what: str, row_id: str) -> Decimal | None:
        """An amount or difference sealed by this stage (the report reads them with the same key)."""
        if sealed is None:
            return None
        return Decimal(self._state_key.open(sealed, f"{what}|{row_id}".encode()).decode())


def redelivered(batch: Sequence[IncomingMessage], output: Any) -> list[tuple[IncomingMessage, VerifiedEvent]]:
    """The batch's messages intake recognised as stored before, decoded (see ``process_batch``)."""
    import base64

    from security.verification import parse_issued_at

    decided = {m.position for m, _ in output.accepted} | {d.message.position for d in output.dead_letters}
    out = []
    for message in batch:
        if message.position in decided:
            continue
        try:
            header_b64, payload_b64, _ = message.value.split(b".")
            header = json.loads(base64.urlsafe_b64decode(header_b64 + b"=" * (-len(header_b64) % 4)))
            payload = json.loads(base64.urlsafe_b64decode(payload_b64 + b"=" * (-len(payload_b64) % 4)))
            out.append((message, VerifiedEvent(
                event_id=payload["event_id"], source=payload["source"], kid=header.get("kid", ""),
                alg=header.get("alg", ""), typ=header.get("typ", ""),
                issued_at=parse_issued_at(payload["issued_at"]), payload=payload)))
        except (ValueError, KeyError, TypeError):
            log.warning("a redelivered message at %s could not be read again", message.position)
    return out


def match_message(m: Match) -> dict[str, object]:
    """The reconciliation-topic message of a match: ids and how it matched, no amounts."""
    return {"type": "match", "match_id": m.match_id, "pairing": m.pairing, "stage": m.stage.value,
            "rule": m.rule, "score": m.score, "kind": m.kind, "status": m.status.value,
            "left_ids": list(m.left_ids), "right_ids": list(m.right_ids)}


def break_message(b: Break) -> dict[str, object]:
    return {"type": "break", "break_id": b.break_id, "pairing": b.pairing, "record_id": b.record_id,
            "source": b.source, "reason": b.reason.value, "related_ids": list(b.related_ids)}


def match_record(m: Match, actor: str) -> AuditRecord:
    action = AuditAction.RECON_SUGGESTED if m.status is Status.SUGGESTED else AuditAction.RECON_MATCHED
    return AuditRecord(
        audit_id=audit_id_for(action, m.match_id), actor=actor, action=action,
        correlation_id=m.match_id, subject_ids=[*m.left_ids, *m.right_ids],
        detail={k: v for k, v in match_message(m).items() if k not in {"left_ids", "right_ids", "type"}},
    )


def break_record(b: Break, actor: str) -> AuditRecord:
    return AuditRecord(
        audit_id=audit_id_for(AuditAction.RECON_BREAK, b.break_id), actor=actor,
        action=AuditAction.RECON_BREAK, correlation_id=b.break_id, subject_ids=[b.record_id, *b.related_ids],
        detail={"break_id": b.break_id, "pairing": b.pairing, "source": b.source, "reason": b.reason.value},
    )


class ConsistencyStage:
    """Cross-agency checks on documents: each person's facts wait (sealed) for the other agency.

    When a person's tax return and contribution record are both in, the rules run and the
    person leaves the pending state; ``flush`` closes what is still waiting (a document
    missing at one agency). Discrepancies are stored in ``recon_breaks`` (reason: the rule)
    and audited as ``recon.inconsistent``; no field value is stored or audited.
    """

    PAIRING = GOVERNMENT_PAIRING

    def __init__(self, settings: Settings, actor: str, index_key: BlindIndexKey,
                 readable: dict[str, frozenset[str]], name: str = "government") -> None:
        self._settings = settings
        self._actor = actor
        self._index_key = index_key
        self._state_key = StateKey.derive(index_key.material)
        self._readable = readable
        self._name = name
        self._version = 0
        self.pending: dict[str, dict[str, dict[str, str | None]]] | None = None
        self._seen: dict[str, None] = {}  # document ids taken in, oldest first
        self._since: dict[str, str] = {}  # person -> issued_at of their first pending document
        self._newest: str | None = None  # the newest issued_at seen (the stage's event time)
        self._loading = asyncio.Lock()

    def _context(self) -> bytes:
        return f"recon_state|{self._name}".encode()

    async def _load(self) -> dict[str, dict[str, dict[str, str | None]]]:
        async with self._loading:
            return await self._load_once()

    async def _load_once(self) -> dict[str, dict[str, dict[str, str | None]]]:
        if self.pending is None:
            url = self._settings.database_url
            stored = await until_stored(lambda: load_state(url, self._name), self._settings.db_retry_max_s,
                                        "loading consistency state")
            self.pending = {}
            if stored is not None:
                sealed, self._version = stored
                state = json.loads(self._state_key.open(sealed, self._context()))
                self.pending = state.get("pending", {})
                self._seen = dict.fromkeys(state.get("seen", []))
                self._since = dict(state.get("since", {}))
                self._newest = state.get("newest")
        return self.pending

    async def process(self, accepted: Sequence[tuple[IncomingMessage, VerifiedEvent]],
                      flush: bool = False) -> ReconOutput:
        """Check the batch's documents; a stale stored state is reloaded as in
        ``ReconciliationStage.process``."""
        def drop_loaded() -> None:
            self.pending, self._seen, self._since, self._newest = None, {}, {}, None

        return await reloading_stale_state(lambda: self._process(accepted, flush), drop_loaded,
                                           f"consistency state {self._name!r}")

    async def _process(self, accepted: Sequence[tuple[IncomingMessage, VerifiedEvent]],
                       flush: bool) -> ReconOutput:
        from reconcile.government import AgencyFacts, check_person, facts_from_payload

        pending = await self._load()
        touched: set[str] = set()
        for _, event in accepted:
            if event.typ != DOCUMENT_V1 or event.payload.get("agency") not in {TAX_BUREAU, SOCIAL_SECURITY}:
                continue
            if event.event_id in self._seen:  # delivered again after a restart
                continue
            self._seen[event.event_id] = None
            while len(self._seen) > SEEN_DOCUMENTS:
                self._seen.pop(next(iter(self._seen)))
            facts = facts_from_payload(event.payload, lambda nid: blind_index(self._index_key, nid).hex())
            stamp = event.issued_at.astimezone(UTC).isoformat()
            self._since.setdefault(facts.person_key, stamp)
            self._newest = max(self._newest or stamp, stamp)
            pending.setdefault(facts.person_key, {})[facts.agency] = {
                "event_id": facts.event_id, "income": _text(facts.income), "tax_paid": _text(facts.tax_paid),
                "insurance_status": facts.insurance_status,
                "contribution_base": _text(facts.contribution_base)}
            touched.add(facts.person_key)
        if not touched and not flush:
            return ReconOutput()
        # A person whose other document has not come within the window (in event time: the
        # newest issued_at seen) is closed too: missing at one agency.
        cutoff = (datetime.fromisoformat(self._newest) - timedelta(days=self._settings.recon_window_days)
                  ).isoformat() if self._newest else ""
        overdue = {k for k, since in self._since.items() if k in pending and since < cutoff}
        found = []
        for key in sorted(pending if flush else touched | overdue):
            agencies = pending[key]
            if not flush and len(agencies) < 2 and key not in overdue:
                continue
            facts_list = [AgencyFacts(key, agency, str(f["event_id"]), _num(f["income"]), _num(f["tax_paid"]),
                                      f["insurance_status"], _num(f["contribution_base"]))
                          for agency, f in sorted(agencies.items())]
            found += check_person(facts_list, self._readable, complete=True)
            del pending[key]
            self._since.pop(key, None)
        rows = [BreakRow(break_id=d.discrepancy_id, pairing=self.PAIRING, record_id=d.event_ids[0],
                         source=d.agencies[0], reason=d.rule[:STORED_REASON_LENGTH],
                         detail_sealed=self._state_key.seal(
                             json.dumps({"rule": d.rule, "visible_to": list(d.visible_to)}).encode(),
                             f"detail|{d.discrepancy_id}".encode()),
                         related_ids=d.event_ids[1:]) for d in found]
        state = {"pending": pending, "seen": list(self._seen), "since": self._since, "newest": self._newest}
        sealed = self._state_key.seal(json.dumps(state).encode(), self._context())
        self._version += 1
        url, version = self._settings.database_url, self._version
        await until_stored(lambda: save_step(url, self._name, sealed, version, [], rows),
                           self._settings.db_retry_max_s, "storing consistency results")
        out = ReconOutput(discrepancies=found)
        for d in found:
            detail = {"discrepancy_id": d.discrepancy_id, "rule": d.rule, "agencies": list(d.agencies),
                      "visible_to": list(d.visible_to)}
            out.audit.append(AuditRecord(
                audit_id=audit_id_for(AuditAction.RECON_INCONSISTENT, d.discrepancy_id), actor=self._actor,
                action=AuditAction.RECON_INCONSISTENT, correlation_id=d.discrepancy_id,
                subject_ids=list(d.event_ids), detail=detail))
            message = {"type": "inconsistency", **detail, "event_ids": list(d.event_ids)}
            out.messages.append((d.discrepancy_id.encode(), json.dumps(message).encode()))
        return out

    async def process_batch(self, batch: Sequence[IncomingMessage], output: Any) -> ReconOutput:
        """As ``ReconciliationStage.process_batch``: accepted and redelivered documents."""
        return await self.process([*output.accepted, *redelivered(batch, output)])

    async def flush(self) -> ReconOutput:
        return await self.process([], flush=True)


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _num(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


class ReconciliationWorker:
    """The reconciliation role: both stages behind intake, on a consumer group of their own.

    Like enrichment, it reads the intake topics itself and hands on only what intake stored
    from these very bytes (``EnrichmentStage.decided``: it waits for intake, and skips what
    intake rejected), so a redelivery after a crash is reconciled again and recognised by
    record id. Its offsets move only after its results are stored.
    """

    def __init__(self, settings: Settings, actor: str, account_key: BlindIndexKey,
                 national_id_key: BlindIndexKey, intake_progress: Callable[..., Any],
                 embed: Embedder | None = None, policy: str = "government") -> None:
        from agents.enrichment import EnrichmentStage
        from reconcile.government import readable_from_policy

        # Only its ``decided`` gate is used: which messages intake stored (recognised by
        # their keyed message MAC, whose key derives from the account index key).
        self._gate = EnrichmentStage(settings, None, intake_progress,  # type: ignore[arg-type]
                                     message_key=message_mac_key(account_key))
        self.finance = ReconciliationStage(settings, actor, account_key, embed=embed)
        self.government = ConsistencyStage(settings, actor, national_id_key, readable_from_policy(policy))

    async def process(self, batch: list[IncomingMessage]) -> ReconOutput:
        accepted = await self._gate.decided(batch)
        out = ReconOutput()
        for stage in (self.finance, self.government):
            part = await stage.process(accepted)
            out.audit += part.audit
            out.messages += part.messages
            out.matches += part.matches
            out.breaks += part.breaks
            out.discrepancies += part.discrepancies
        return out
