"""Inference on accepted events: categorize transactions, classify documents.

Runs after the events are stored, so an inference failure never loses an event: it is
audited as ``event.inferred`` with outcome ``error``, and a replay can infer it later.
Results are keyed by model version, so a new model's answer sits beside the old one.

A label is sealed like the text it was read from (``inference.labels``): under the event
subject's data key, with the worker's public tier keys, so this stage stores labels it can
never read back, and ``attest forget`` shreds them with the subject's other fields.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from functools import partial
from typing import Protocol

from agents.messages import BatchOutput, IncomingMessage
from agents.retry import until_stored
from config.settings import Settings, secret_environ
from inference.errors import InferenceError
from inference.labels import LabelToSeal, label_protector
from inference.lanes import Priority
from inference.tasks import Classification
from protection.blind_index import MESSAGE_MAC_DOMAIN, MessageMacKey, message_mac_key
from protection.keyring import Keyring
from protection.keyring_sources import open_writer_keyring
from protection.tiers import protection_catalog
from schemas.audit import AuditAction, AuditRecord, audit_id_for
from schemas.catalog import DOCUMENT_V1, TRANSACTION_V1
from security.errors import Rejection
from security.intake_keys import HeldIntakeKeys
from security.jws import decode_compact, parse_json_object
from security.nested import IntakeKeys, inner_token
from security.verification import VerifiedEvent, parse_issued_at
from storage.events import Delivery, already_stored
from storage.inferences import store_inferences

log = logging.getLogger("attest.enrichment")

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

#: Which task runs on which schema, and the text it reads.
TASK_FOR_TYPE = {TRANSACTION_V1: "transaction_category", DOCUMENT_V1: "document_type"}


class Classifier(Protocol):
    async def classify(
        self, task: str, texts: list[str], priority: Priority = Priority.LIVE
    ) -> list[Classification]: ...


def inference_text(event: VerifiedEvent) -> str | None:
    """The text a model reads for this event (None: nothing to infer for its schema)."""
    p = event.payload
    if event.typ == TRANSACTION_V1:
        return f"{p.get('counterparty', '')}: {p.get('memo', '')}".strip()
    if event.typ == DOCUMENT_V1:
        return f"{p.get('title', '')}\n{p.get('body', '')}".strip()
    return None


def label_to_seal(event: VerifiedEvent, task: str, label: Classification) -> LabelToSeal:
    """What sealing one label needs of its event: the subject (which picks the data key) and
    the department (bound to the ciphertext), read from the payload as intake sealed it."""
    schema = protection_catalog().schema(event.typ)
    return LabelToSeal(event.event_id, event.typ, task, label.model_version,
                       event.payload[schema.subject_field],
                       str(event.payload[schema.department_field]), label.label, label.score)


def worker_message_key(settings: Settings, keyring: Keyring | None = None) -> MessageMacKey:
    """The key of ``events.message_mac``, from the worker's keyring (as intake reads it)."""
    keyring = keyring or open_writer_keyring(settings.state_dir, secret_environ())
    return message_mac_key(keyring.blind_index_key(MESSAGE_MAC_DOMAIN))


class Enrichment:
    def __init__(self, settings: Settings, classifier: Classifier, actor: str,
                 keyring: Keyring | None = None) -> None:
        """``keyring`` is the worker's (public tier keys and index keys; by default read as
        the intake reads it): labels are sealed with it, and the message MAC key that
        recognises what intake stored is derived from it."""
        self._settings = settings
        self._classifier = classifier
        self._actor = actor
        keyring = keyring or open_writer_keyring(settings.state_dir, secret_environ())
        self._protector = label_protector(keyring)
        self.message_key: MessageMacKey = worker_message_key(settings, keyring)

    async def process(
        self, accepted: list[tuple[IncomingMessage, VerifiedEvent]],
        priority: Priority = Priority.LIVE,
    ) -> list[AuditRecord]:
        """Classify, store the results, and return one audit record per event."""
        groups: dict[str, list[tuple[IncomingMessage, VerifiedEvent, str]]] = defaultdict(list)
        for message, event in accepted:
            text = inference_text(event)
            if text is not None:
                groups[TASK_FOR_TYPE[event.typ]].append((message, event, text))
        results: list[LabelToSeal] = []
        audit: list[AuditRecord] = []
        for task, items in groups.items():
            try:
                labels = await self._classifier.classify(task, [t for _, _, t in items], priority)
            except InferenceError as exc:
                log.warning("inference failed for %d events (%s): %s", len(items), task, exc)
                audit.extend(self._record(m, e, task, None, str(exc)) for m, e, _ in items)
                continue
            for (message, event, _), label in zip(items, labels, strict=True):
                results.append(label_to_seal(event, task, label))
                audit.append(self._record(message, event, task, label, None))
        url, protector = self._settings.database_url, self._protector
        await until_stored(lambda: store_inferences(url, results, protector),
                           self._settings.db_retry_max_s, "storing inference results")
        return audit

    def _record(self, message: IncomingMessage, event: VerifiedEvent, task: str,
                label: Classification | None, error: str | None) -> AuditRecord:
        return AuditRecord(
            audit_id=audit_id_for(AuditAction.EVENT_INFERRED, event.event_id, task,
                                  label.model_version if label else "error", message.position),
            actor=self._actor,
            action=AuditAction.EVENT_INFERRED,
            outcome="ok" if label else "error",
            reason=None if label else "inference_failed",
            correlation_id=event.event_id,
            subject_ids=[event.event_id],
            source_topic=message.topic,
            source_partition=message.partition,
            source_offset=message.offset,
            # No label or score: both are read from the confidential text, and the audit log
            # is append-only and in clear; the label lives in ``inferences``, sealed.
            detail=({"task": task, "model_version": label.model_version} if label
                    else {"task": task, "error": error[:300] if error else ""}),
        )


#: (topic, partition) -> the next offset the intake group will read (-1: none committed).
IntakeProgress = Callable[[list[tuple[str, int]]], dict[tuple[str, int], int]]


def _stored_form(message: IncomingMessage, max_bytes: int,
                 intake_keys: IntakeKeys | None = None) -> tuple[VerifiedEvent, Delivery] | None:
    """The event this message would be if intake accepted it, and the delivery to look up.

    No signature check here: the event is only classified if intake stored it *from these
    exact bytes* (same position, same SHA-256), and intake verified those bytes. A nested
    (encrypted) message is opened with ``intake_keys`` first; the delivery's hash stays the
    one of the bytes on the topic.
    """
    inner = inner_token(message.value, intake_keys, max_bytes) if intake_keys else message.value
    if inner is None:
        return None  # intake dead-letters it; nothing to classify
    try:
        token = decode_compact(inner, max_bytes)
        payload = parse_json_object(token.payload, "payload")
        event = VerifiedEvent(
            event_id=str(payload["event_id"]), source=str(payload["source"]), kid=token.kid,
            alg=token.alg, typ=token.typ, issued_at=parse_issued_at(str(payload["issued_at"])),
            payload=payload,
        )
    except (Rejection, KeyError, ValueError, TypeError):
        return None  # intake dead-letters it; nothing to classify
    if TASK_FOR_TYPE.get(event.typ) is None or not _UUID.fullmatch(event.event_id):
        return None  # unsigned bytes may claim anything; only a real event id can be stored
    digest = hashlib.sha256(message.value).digest()
    return event, (event.event_id, message.topic, message.partition, message.offset, digest)


#: Whether the broker's log still holds (topic, partition, offset, sha256): see streams/log_probe.
LogCheck = Callable[[str, int, int, bytes], bool | None]


class EnrichmentStage:
    """Classifies what intake stored, reading the intake topics in a consumer group of its own.

    Intake never waits for the model: this stage has its own consumer group, batches and
    lag (docs/architecture.md). It never runs ahead of intake either: a message is classified
    once intake stored it from these very bytes, skipped once intake's committed offset has
    passed it without storing it (intake rejected it), and waited for otherwise.

    The one exception: a message the broker's log no longer holds (the embedded broker
    restarted and forgot its topics) will never be read by intake, so after waiting
    ``probe_after_s`` the stage asks the log, and a message found missing twice in a row is
    given up, with a warning, instead of holding the stage (and a rebalance) for ever.
    """

    def __init__(self, settings: Settings, enrichment: Enrichment, intake_progress: IntakeProgress,
                 poll_s: float = 0.2, log_check: LogCheck | None = None,
                 probe_after_s: float = 10.0, message_key: MessageMacKey | None = None) -> None:
        self._settings = settings
        self._enrichment = enrichment
        self._intake_progress = intake_progress
        self._poll_s = poll_s
        self._log_check = log_check
        self._probe_after_s = probe_after_s
        self._intake_keys = HeldIntakeKeys(settings.intake_keys_dir,
                                           refresh_s=settings.keyring_refresh_s)
        # What intake stored is recognised by its keyed message MAC (storage.events): the
        # key is the enrichment's, or the one given (the reconciliation stage uses this gate
        # without an enrichment), else read from the worker's keyring.
        self._message_key = message_key or (enrichment.message_key if enrichment is not None
                                             else worker_message_key(settings))

    async def decided(
        self, batch: list[IncomingMessage]
    ) -> list[tuple[IncomingMessage, VerifiedEvent]]:
        """The messages of ``batch`` that intake stored, once intake has decided all of them."""
        waiting = [(m, *found) for m in batch
                   if (found := _stored_form(m, self._settings.max_event_bytes,
                                                self._intake_keys)) is not None]
        stored: list[tuple[IncomingMessage, VerifiedEvent]] = []
        url, delay = self._settings.database_url, self._poll_s
        started, missing = time.monotonic(), Counter[Delivery]()
        while waiting:
            positions = sorted({(m.topic, m.partition) for m, _, _ in waiting})
            # Progress first, rows second: a row is committed before intake's offset moves,
            # so an offset read before the rows cannot claim a decision the rows do not show.
            progress = await asyncio.to_thread(self._intake_progress, positions)
            lookup = partial(already_stored, url, [d for _, _, d in waiting],
                             message_key=self._message_key)
            found = await until_stored(lookup, self._settings.db_retry_max_s, "finding stored events")
            stored.extend((m, e) for m, e, d in waiting if d in found)
            waiting = [(m, e, d) for m, e, d in waiting
                       if d not in found and progress.get((m.topic, m.partition), -1) <= m.offset]
            if waiting and self._log_check and time.monotonic() - started >= self._probe_after_s:
                waiting = await self._drop_lost(waiting, missing)
            if waiting:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        return stored

    async def _drop_lost(self, waiting: list[tuple[IncomingMessage, VerifiedEvent, Delivery]],
                         missing: Counter[Delivery]) -> list[tuple[IncomingMessage, VerifiedEvent, Delivery]]:
        """``waiting`` without the messages the log has been found not to hold twice running."""
        assert self._log_check is not None
        kept = []
        for m, e, d in waiting:
            held = await asyncio.to_thread(self._log_check, m.topic, m.partition, m.offset, d[4])
            missing[d] = missing[d] + 1 if held is False else 0
            if missing[d] < 2:
                kept.append((m, e, d))
            else:
                log.warning("%s/%d@%d is no longer in the broker's log (a broker that lost its "
                            "topics, or retention); intake cannot decide it, so it is not "
                            "classified", m.topic, m.partition, m.offset)
        return kept

    async def process(self, batch: list[IncomingMessage]) -> BatchOutput:
        accepted = await self.decided(batch)
        output = BatchOutput()
        if accepted:
            output.audit.extend(await self._enrichment.process(accepted))
        return output
