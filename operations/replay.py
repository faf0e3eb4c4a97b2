"""Running a replay: read the selected messages again and put them through intake.

Replayed messages take the live path (``IntakeProcessor``: verification, storage, audit),
with one audited exception: the ``issued_at`` window is not applied. What the worker
already stored from the same bytes at the same position is recognised and changes nothing,
so a replay is idempotent. A replay never writes the dead-letter topic: a message that is
still refused was dead-lettered by the worker when it first arrived (and a dead-letter
retry must not add a second copy). Accepted events are classified at the model pool's
REPLAY priority, in this process, when they have no result of the model in use yet.

Progress is saved after every batch whose effects are durable (``operations.resume``), so
Ctrl-C between batches, or a crash inside one, resumes without losing or redoing work that
mattered; a batch redone after a crash is recognised as a redelivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agents.intake import IntakeProcessor
from agents.messages import IncomingMessage
from agents.retry import until_stored
from config.settings import Settings, secret_environ
from operations import outcomes
from operations.broker_reads import BrokerReader
from operations.errors import AuditUnavailable, OffsetOutOfRange, UnknownEvent
from operations.letters import LetterFilter
from operations.resume import ReplayProgress, clear_progress, load_progress, save_progress
from operations.selection import Selection, event_ranges, offset_ranges
from operations.times import to_millis
from protection.fields import writer_protector
from schemas.audit import AuditAction, AuditRecord, audit_id_for
from security.jws import claimed_event_id
from storage.keys import key_snapshot
from storage.operations import event_positions, inferred_event_ids
from streams.audit_publisher import publish_audit
from streams.dead_letters import StoredLetter
from streams.errors import BrokerUnavailable
from streams.log_probe import LogProbe
from streams.topics import DEAD_LETTER, INTAKE_TOPICS

log = logging.getLogger("attest.replay")


@dataclass
class ReplayResult:
    """How a run ended. ``counts`` covers the whole replay (earlier interrupted runs too)."""

    key: str
    counts: dict[str, int]
    total: int
    done: int
    processed_this_run: int
    seconds: float
    interrupted: bool
    resumed: bool
    dry_run: bool
    model_version: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.processed_this_run / self.seconds if self.seconds > 0 else 0.0


def topic_name(settings: Settings, suffix: str) -> str:
    return settings.topic(suffix)


def plan(settings: Settings, selection: Selection, reader: BrokerReader) -> ReplayProgress:
    """Saved progress of this selection, or its ranges resolved against the broker now."""
    key = selection.key(topic_name(settings, selection.topic))
    saved = load_progress(settings.state_dir, key)
    if saved is not None:
        return saved
    topic = topic_name(settings, selection.topic)
    partitions = reader.partitions(topic)
    if selection.event_ids:
        found = event_positions(settings.database_url, list(selection.event_ids))
        missing = [e for e in selection.event_ids if e not in found]
        if missing:
            raise UnknownEvent(f"no stored event has id {missing[0]}"
                               + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        elsewhere = [(e, p[0]) for e, p in found.items() if p[0] != topic]
        if elsewhere:
            raise UnknownEvent(f"event {elsewhere[0][0]} was read from {elsewhere[0][1]}, not {topic}")
        watermarks = reader.watermarks(topic, partitions)
        for event_id, (_, partition, offset, _) in found.items():
            low, high = watermarks.get(partition, (0, 0))
            if not low <= offset < high:
                raise OffsetOutOfRange(
                    f"event {event_id} was read at {partition}:{offset}, which the topic no longer "
                    f"holds (partition {partition} has offsets {low}..{high - 1})")
        ranges = event_ranges([(p, o) for _, p, o, _ in found.values()])
    else:
        watermarks = reader.watermarks(topic, partitions)
        bounds = None
        if selection.since is not None or selection.until is not None:
            bounds = {}
            for p, (low, high) in watermarks.items():
                start = (reader.offset_for_time(topic, p, low, high, to_millis(selection.since))
                         if selection.since else low)
                end = (reader.offset_for_time(topic, p, start, high, to_millis(selection.until) + 1)
                       if selection.until else high)
                bounds[p] = (start, end)
        ranges = offset_ranges(selection, watermarks, bounds)
    return ReplayProgress.fresh(key, selection.describe(), ranges)


def expected_model_version(settings: Settings) -> str:
    """The version the model pool will report for these settings, without loading torch."""
    from inference.encoder import bundled_model_dir, model_name, weights_hash

    model_dir = Path(settings.model_dir) if settings.model_dir else bundled_model_dir()
    suffix = "" if settings.inference_precision == "fp32" else f"+{settings.inference_precision}"
    return f"{model_name(model_dir)}@{weights_hash(model_dir)}{suffix}"


class _LazyEnrichment:
    """The model pool, started only when a replayed event needs a classification."""

    def __init__(self, settings: Settings, actor: str) -> None:
        self._settings = settings
        self._actor = actor
        self._pool: Any = None
        self._enrichment: Any = None

    async def process(self, accepted: list[tuple[IncomingMessage, Any]]) -> list[AuditRecord]:
        from agents.enrichment import Enrichment
        from inference.lanes import Priority

        if self._enrichment is None:
            from inference.pool import ModelPool
            from inference.tasks import Tasks

            self._pool = ModelPool.from_settings(self._settings)
            await self._pool.start()
            tasks = Tasks(self._pool)
            await tasks.prepare()
            self._enrichment = Enrichment(self._settings, tasks, actor=self._actor)
        return await self._enrichment.process(accepted, priority=Priority.REPLAY)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()


def intake_processor(settings: Settings, actor: str, check_freshness: bool = False) -> IntakeProcessor:
    """The live intake, minus the issued_at window (the audited exception of a replay).

    A dead-letter retry keeps the window (``check_freshness``), judged at the time the
    original message reached the broker: see ``Replay._incoming``.
    """
    options: dict[str, Any] = {
        "actor": actor,
        "accepted_types": {spec.name(settings): spec.accepted_types for spec in INTAKE_TOPICS},
        "protector": writer_protector(settings.state_dir, secret_environ()),
    }
    if "check_freshness" in inspect.signature(IntakeProcessor.__init__).parameters:
        options["check_freshness"] = check_freshness
    processor = IntakeProcessor(settings, **options)
    processor.replace_keys(key_snapshot(settings.database_url))
    return processor


def _broker_time(msg: Any) -> dict[str, datetime]:
    """The record's broker timestamp, where ``IncomingMessage`` carries one."""
    kind, millis = msg.timestamp()
    if "broker_time" not in IncomingMessage.__dataclass_fields__ or kind == 0 or millis < 0:
        return {}
    return {"broker_time": datetime.fromtimestamp(millis / 1000, UTC)}


def _identity_key(letter: StoredLetter) -> str:
    topic, partition, offset, digest = letter.identity
    return hashlib.sha256(f"{topic}/{partition}/{offset}/{digest}".encode()).hexdigest()[:24]


class Replay:
    """One replay run over a planned selection. Stop it by setting ``stop``."""

    def __init__(
        self,
        settings: Settings,
        selection: Selection,
        *,
        reason: str,
        actor: str,
        rate: float | None = None,
        stop: threading.Event | None = None,
        on_advance: Callable[[int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.selection = selection
        self.reason = reason
        self.actor = actor
        self.rate = rate
        self.stop = stop or threading.Event()
        self._on_advance = on_advance or (lambda n: None)
        self._from_dead_letters = selection.topic == DEAD_LETTER.suffix
        self._letter_filter = LetterFilter(reasons=selection.reasons, since=selection.since,
                                           until=selection.until, source=selection.source)
        model_settings = (settings.model_copy(update={"model_dir": Path(selection.model_dir)})
                          if selection.model_dir else settings)
        self._model_settings = model_settings
        self._enrichment = _LazyEnrichment(model_settings, actor)
        self._model_version: str | None = None
        self._mostly_stored = True
        self._probe: LogProbe | None = None

    # -- audit of the operator action ---------------------------------------------------

    @property
    def _actions(self) -> tuple[AuditAction, AuditAction]:
        if self._from_dead_letters:
            return AuditAction.DLQ_RETRY_STARTED, AuditAction.DLQ_RETRIED
        return AuditAction.REPLAY_STARTED, AuditAction.REPLAY_FINISHED

    def _operator_record(self, action: AuditAction, run_id: str, progress: ReplayProgress,
                         detail: dict[str, object], outcome: str = "ok") -> AuditRecord:
        return AuditRecord(
            audit_id=audit_id_for(action, progress.key, run_id), actor=self.actor, action=action,
            outcome=outcome,  # type: ignore[arg-type]
            correlation_id=f"replay:{progress.key}", subject_ids=[],
            source_topic=topic_name(self.settings, self.selection.topic),
            detail={"why": self.reason, "selection": progress.selection, "total": progress.total,
                    **detail},
        )

    # -- the run ----------------------------------------------------------------------------

    async def run(self, progress: ReplayProgress) -> ReplayResult:
        # A resumed dead-letter retry filters by the instants its first run resolved.
        times = {name: datetime.fromisoformat(str(progress.selection[name]))
                 for name in ("since", "until") if name in progress.selection}
        if times:
            self._letter_filter = LetterFilter(
                reasons=self.selection.reasons, source=self.selection.source,
                since=times.get("since"), until=times.get("until"))
        resumed = progress.done > 0 or bool(progress.counts)
        run_id = f"{datetime.now(UTC).isoformat()}/{progress.runs}"
        dry = self.selection.dry_run
        started, finished = self._actions
        if not dry:
            record = self._operator_record(started, run_id, progress,
                                           {"resumed_at": progress.done if resumed else 0})
            try:
                await asyncio.to_thread(publish_audit, self.settings, [record])
            except BrokerUnavailable as exc:
                raise AuditUnavailable(
                    f"the replay was not started: its audit record could not be sent ({exc})") from None
            save_progress(self.settings.state_dir, progress)
        processor = intake_processor(self.settings, self.actor, check_freshness=self._from_dead_letters)
        dry_counts: Counter[str] = Counter()
        t0 = time.monotonic()
        before = progress.done
        try:
            with BrokerReader(self.settings) as reader:
                await self._consume(reader, processor, progress, dry_counts)
        except Exception as exc:
            # Progress is saved up to the last durable batch, so the same command resumes;
            # the audit trail says this run ended in an error, and where.
            if not dry:
                failed = self._operator_record(finished, run_id, progress, {
                    "counts": dict(progress.counts), "done": progress.done, "interrupted": True,
                    "error": f"{type(exc).__name__}: {exc}"[:300]}, outcome="error")
                with contextlib.suppress(BrokerUnavailable):
                    await asyncio.to_thread(publish_audit, self.settings, [failed])
            raise
        finally:
            await self._enrichment.close()
            if self._probe is not None:
                self._probe.close()
                self._probe = None
        seconds = time.monotonic() - t0
        # Stopped with work left. (A range can also end early without a stop: offsets the
        # log no longer holds, or transaction markers at its end; that range is complete.)
        interrupted = self.stop.is_set() and progress.done < progress.total
        counts = dict(dry_counts) if dry else dict(progress.counts)
        result = ReplayResult(
            key=progress.key, counts=counts, total=progress.total, done=progress.done,
            processed_this_run=progress.done - before, seconds=seconds, interrupted=interrupted,
            resumed=resumed, dry_run=dry, model_version=self._model_version,
        )
        if dry:
            return result
        if interrupted:
            progress.runs += 1
            save_progress(self.settings.state_dir, progress)
        else:
            clear_progress(self.settings.state_dir, progress.key)
        detail: dict[str, object] = {
            "counts": counts, "done": progress.done, "interrupted": interrupted,
            "rate_per_s": round(result.rate, 1),
        }
        if self._model_version:
            detail["model_version"] = self._model_version
        try:
            await asyncio.to_thread(publish_audit, self.settings,
                                    [self._operator_record(finished, run_id, progress, detail)])
        except BrokerUnavailable as exc:
            result.notes.append(f"the closing audit record could not be sent: {exc}")
        return result

    async def _consume(self, reader: BrokerReader, processor: IntakeProcessor,
                       progress: ReplayProgress, dry_counts: Counter[str]) -> None:
        topic = topic_name(self.settings, self.selection.topic)
        batch_size = self.settings.batch_size
        if self.rate:
            batch_size = max(1, min(batch_size, int(self.rate / 4) or 1))
        seen = set(progress.seen)
        pending: list[IncomingMessage] = []
        read_upto: dict[int, int] = {}
        skipped: Counter[str] = Counter()
        paced_from, paced_count = time.monotonic(), 0
        for msg in reader.read(topic, progress.remaining_ranges()):
            read_upto[msg.partition()] = msg.offset()
            incoming = self._incoming(msg, seen, skipped)
            if incoming is not None:
                pending.append(incoming)
            if len(pending) + sum(skipped.values()) < batch_size:
                continue
            paced_count += len(pending) + sum(skipped.values())
            await self._flush(processor, pending, skipped, read_upto, progress, seen, dry_counts)
            pending, read_upto, skipped = [], {}, Counter()
            await self._pace(paced_from, paced_count)
            if self.stop.is_set():
                return
        if read_upto:
            await self._flush(processor, pending, skipped, read_upto, progress, seen, dry_counts)

    def _incoming(self, msg: Any, seen: set[str], skipped: Counter[str]) -> IncomingMessage | None:
        now = datetime.now(UTC)
        value = msg.value() or b""
        if not self._from_dead_letters:
            return IncomingMessage(topic=msg.topic(), partition=msg.partition(), offset=msg.offset(),
                                   key=msg.key(), value=value, received_at=now,
                                   **_broker_time(msg))
        headers = {k: (v or b"").decode("utf-8", "replace") for k, v in (msg.headers() or [])}
        letter = StoredLetter(msg.partition(), msg.offset(), msg.key(), value, headers)
        if not self._letter_filter.admits(letter):
            skipped[outcomes.FILTERED] += 1
            return None
        identity = _identity_key(letter)
        if identity in seen:
            skipped[outcomes.DUPLICATE] += 1
            return None
        intake_topics = {spec.name(self.settings) for spec in INTAKE_TOPICS}
        if (letter.source_topic not in intake_topics or letter.source_partition is None
                or letter.source_offset is None):
            skipped[outcomes.UNRETRYABLE] += 1
            return None
        seen.add(identity)
        return IncomingMessage(topic=letter.source_topic, partition=letter.source_partition,
                               offset=letter.source_offset, key=letter.key, value=value,
                               received_at=now, broker_time=self._original_arrival(letter, value))

    def _original_arrival(self, letter: StoredLetter, value: bytes) -> datetime | None:
        """When the letter's bytes reached the intake topic, if the log still shows it.

        A dead letter's headers are only what someone wrote on the dead-letter topic: anyone
        with produce rights there could claim a position and carry an event the live path
        would refuse as stale. So freshness stays on for a retry, judged at the original
        arrival where the intake topic still holds these exact bytes at the claimed position,
        and at the time of the retry otherwise (as if the event were sent now), never skipped.
        """
        assert letter.source_topic is not None and letter.source_partition is not None
        assert letter.source_offset is not None
        if self._probe is None:
            self._probe = LogProbe(self.settings)
        held, at = self._probe.arrival(letter.source_topic, letter.source_partition,
                                       letter.source_offset, hashlib.sha256(value).digest())
        return at if held else None

    async def _flush(self, processor: IntakeProcessor, batch: list[IncomingMessage],
                     skipped: Counter[str], read_upto: dict[int, int], progress: ReplayProgress,
                     seen: set[str], dry_counts: Counter[str]) -> None:
        """Process one batch; only then record its offsets as done."""
        counts: Counter[str] = Counter(skipped)
        if batch and self.selection.dry_run:
            counts.update(await self._dry_run(processor, batch))
        elif batch:
            stored, fresh, verified = await self._split_stored(processor, batch)
            audit: list[AuditRecord] = []
            accepted: list[tuple[IncomingMessage, Any]] = list(verified)
            # The stored ones were verified like the rest, but they were stored from these
            # bytes at this position, so nothing is written (the decision and its audit
            # exist) whatever the verdict is today.
            if stored:
                counts[outcomes.UNCHANGED] += len(stored)
            if fresh:
                output = await processor.process(fresh)
                counts.update(outcomes.count_output(len(fresh), output))
                audit.extend(output.audit)
                accepted.extend(output.accepted)
            audit.extend(await self._infer(accepted))
            if audit:
                await asyncio.to_thread(publish_audit, self.settings, audit)
        done_before = progress.done
        for partition, offset in read_upto.items():
            progress.advance(partition, offset)
        if self.selection.dry_run:
            dry_counts.update(counts)
        else:
            progress.add_counts(counts)
            if self._from_dead_letters:
                progress.seen = sorted(seen)
            save_progress(self.settings.state_dir, progress)
        self._on_advance(progress.done - done_before)

    async def _split_stored(
        self, processor: IntakeProcessor, batch: list[IncomingMessage]
    ) -> tuple[list[IncomingMessage], list[IncomingMessage], list[tuple[IncomingMessage, Any]]]:
        """(messages stored earlier from these bytes at this position, the rest, and the
        stored ones that verify today).

        One query per batch spares the stored ones sealing, an insert that conflicts, and
        audit records that were already published when they were first stored. While the
        query runs in its thread, the batch is verified here when the last batch was mostly
        stored (a replay of stored events), so the round trip costs no time; otherwise the
        stored ones are verified after it, and the rest by the intake itself.
        """
        claimed = {m.position: claimed_event_id(m.value) for m in batch}
        ids = sorted({c for c in claimed.values() if c})
        url = self.settings.database_url
        lookup = asyncio.ensure_future(until_stored(lambda: event_positions(url, ids),
                                                    self.settings.db_retry_max_s,
                                                    "finding stored positions"))
        await asyncio.sleep(0)  # let the lookup reach its thread before verifying here
        early = processor.verify_batch(batch)[0] if self._mostly_stored else None
        where = await lookup
        stored, fresh = [], []
        for message in batch:
            position = where.get(claimed[message.position] or "")
            same = position is not None and outcomes.same_message(position, message)
            (stored if same else fresh).append(message)
        self._mostly_stored = 2 * len(stored) >= len(batch)
        if early is None:
            verified = processor.verify_batch(stored)[0] if stored else []
        else:
            positions = {m.position for m in stored}
            verified = [(m, e) for m, e in early if m.position in positions]
        return stored, fresh, verified

    async def _infer(self, accepted: list[tuple[IncomingMessage, Any]]) -> list[AuditRecord]:
        """Classify the accepted events that have no result of this model yet."""
        from agents.enrichment import TASK_FOR_TYPE

        accepted = [(m, e) for m, e in accepted if e.typ in TASK_FOR_TYPE]
        if not accepted:
            return []
        if self._model_version is None:
            self._model_version = await asyncio.to_thread(expected_model_version, self._model_settings)
        ids = [event.event_id for _, event in accepted]
        done = await asyncio.to_thread(inferred_event_ids, self.settings.database_url, ids,
                                       self._model_version)
        todo = [(m, e) for m, e in accepted if e.event_id not in done]
        return await self._enrichment.process(todo) if todo else []

    async def _dry_run(self, processor: IntakeProcessor, batch: list[IncomingMessage]) -> Counter[str]:
        accepted, refused = processor.verify_batch(batch)
        claimed = {m.position: claimed_event_id(m.value) or "" for m, _ in refused}
        ids = [e.event_id for _, e in accepted] + [c for c in claimed.values() if c]
        stored = await asyncio.to_thread(event_positions, self.settings.database_url, ids)
        return outcomes.dry_run_outcomes(accepted, refused, stored, claimed)

    async def _pace(self, since: float, count: int) -> None:
        """Hold the average at ``rate`` messages per second; wake early when stopped."""
        if not self.rate:
            return
        wait = count / self.rate - (time.monotonic() - since)
        while wait > 0 and not self.stop.is_set():
            await asyncio.sleep(min(wait, 0.2))
            wait = count / self.rate - (time.monotonic() - since)
