"""Inference on accepted events: categorize transactions, classify documents.

Runs after the events are stored, so an inference failure never loses an event: it is
audited as ``event.inferred`` with outcome ``error``, and a replay can infer it later.
Results are keyed by model version, so a new model's answer sits beside the old one.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Protocol

from agents.messages import IncomingMessage
from agents.retry import until_stored
from config.settings import Settings
from inference.errors import InferenceError
from inference.lanes import Priority
from inference.tasks import Classification
from schemas.audit import AuditRecord, audit_id_for
from schemas.catalog import DOCUMENT_V1, TRANSACTION_V1
from security.verification import VerifiedEvent
from storage.inferences import InferenceResult, store_inferences

log = logging.getLogger("attest.enrichment")

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


class Enrichment:
    def __init__(self, settings: Settings, classifier: Classifier, actor: str) -> None:
        self._settings = settings
        self._classifier = classifier
        self._actor = actor

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
        results: list[InferenceResult] = []
        audit: list[AuditRecord] = []
        for task, items in groups.items():
            try:
                labels = await self._classifier.classify(task, [t for _, _, t in items], priority)
            except InferenceError as exc:
                log.warning("inference failed for %d events (%s): %s", len(items), task, exc)
                audit.extend(self._record(m, e, task, None, str(exc)) for m, e, _ in items)
                continue
            for (message, event, _), label in zip(items, labels, strict=True):
                results.append(InferenceResult(event.event_id, task, label.model_version,
                                               label.label, label.score))
                audit.append(self._record(message, event, task, label, None))
        url = self._settings.database_url
        await until_stored(lambda: store_inferences(url, results), self._settings.db_retry_max_s,
                           "storing inference results")
        return audit

    def _record(self, message: IncomingMessage, event: VerifiedEvent, task: str,
                label: Classification | None, error: str | None) -> AuditRecord:
        return AuditRecord(
            audit_id=audit_id_for("event.inferred", event.event_id, task,
                                  label.model_version if label else "error", message.position),
            actor=self._actor,
            action="event.inferred",
            outcome="ok" if label else "error",
            reason=None if label else "inference_failed",
            correlation_id=event.event_id,
            subject_ids=[event.event_id],
            source_topic=message.topic,
            source_partition=message.partition,
            source_offset=message.offset,
            detail=({"task": task, "label": label.label, "score": round(label.score, 4),
                     "model_version": label.model_version} if label
                    else {"task": task, "error": error[:300] if error else ""}),
        )
