"""Storing and reading inference results (idempotent per event, task and model version).

Labels and scores are stored sealed (``inference.labels``): the worker stores them with the
data keys it minted, in one transaction under the shredding epoch's share lock, exactly as
``storage.events`` stores an event's fields. Reading them back takes a tier private key
(``read_labels``); ``inferences_for`` lists what is stored without opening anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from access.policy import AccessDecision
from inference.labels import (
    LABEL_SOURCES,
    LabelToSeal,
    OpenedLabel,
    SealedLabel,
    label_catalog,
    label_decisions,
    open_label,
    seal_labels,
)
from protection.fields import FieldProtector
from protection.keyring import Keyring
from protection.reader import FieldReader
from protection.tiers import FieldSpec, protection_catalog
from storage import protected
from storage.db import engine_for, run_db
from storage.inference_models import InferenceRow
from storage.models import EventRow


@dataclass(frozen=True, slots=True)
class StoredInference:
    """That an event was classified, by which task and model: what anyone may list."""

    event_id: str
    task: str
    model_version: str


def store_inferences(url: str, labels: list[LabelToSeal], protector: FieldProtector) -> int:
    """Seal and insert; a result already stored for the same (event, task, model) is kept.

    ``protector`` is ``inference.labels.label_protector(keyring)``: the label is sealed under
    the subject's data key of the label's tier, stored in this transaction if it is new.
    """
    if not labels:
        return 0

    def write() -> int:
        with engine_for(url).begin() as conn:
            # Shared lock: a forget cannot destroy the keys used here while this runs, and
            # one that committed before moves the epoch, so no destroyed key is reused.
            sealed, batch = seal_labels(protector, labels, protected.shredding_epoch(conn))
            protected.insert_key_records(conn, batch.wrapping_keys, batch.data_keys)
            rows = [{"event_id": s.event_id, "task": s.task, "model_version": s.model_version,
                     "department": s.department, "label_sealed": s.label_sealed,
                     "score_sealed": s.score_sealed} for s in sealed]
            stmt = (insert(InferenceRow).values(rows)
                    .on_conflict_do_nothing(index_elements=["event_id", "task", "model_version"])
                    .returning(InferenceRow.event_id))
            count = len(conn.execute(stmt).all())
        protector.confirm_stored(batch)
        return count

    return run_db(write)


def inferences_for(url: str, event_id: str) -> list[StoredInference]:
    """The results stored for ``event_id`` (oldest first), without their sealed labels."""

    def read() -> list[StoredInference]:
        with engine_for(url).connect() as conn:
            rows = conn.execute(
                select(InferenceRow.event_id, InferenceRow.task, InferenceRow.model_version)
                .where(InferenceRow.event_id == event_id).order_by(InferenceRow.created_at)
            ).all()
        return [StoredInference(str(r.event_id), r.task, r.model_version) for r in rows]

    return run_db(read)


def sealed_inferences_for(url: str, event_id: str) -> list[tuple[str, SealedLabel]]:
    """(the event's schema, its sealed label) for each result stored for ``event_id``."""

    def read() -> list[tuple[str, SealedLabel]]:
        i = InferenceRow
        with engine_for(url).connect() as conn:
            rows = conn.execute(
                select(EventRow.typ, i.event_id, i.task, i.model_version, i.department,
                       i.label_sealed, i.score_sealed)
                .join(EventRow, EventRow.event_id == i.event_id)
                .where(i.event_id == event_id).order_by(i.created_at)
            ).all()
        return [(r.typ, SealedLabel(str(r.event_id), r.task, r.model_version, r.department,
                                    bytes(r.label_sealed), bytes(r.score_sealed)))
                for r in rows]

    return run_db(read)


#: The access policy's decisions for the fields a model read: (typ, their specs) -> decisions.
Decide = Callable[[str, tuple[FieldSpec, ...]], Mapping[str, AccessDecision]]


def read_labels(url: str, event_id: str, keyring: Keyring, decide: Decide) -> list[OpenedLabel]:
    """The labels of ``event_id``, opened with ``keyring``'s tier keys where ``decide`` allows.

    A label is readable exactly when every field the model read is (``label_decisions``):
    ``decide`` is the access policy for the reader's role and approvals. A label whose data
    key was destroyed by ``attest forget`` comes back ``withheld`` ("forgotten ...").
    Raises ``protection.errors.KeyNotHeld`` when an allowed label's tier key is not held.
    """
    found = sealed_inferences_for(url, event_id)
    if not found:
        return []
    reader = FieldReader(keyring, label_catalog())
    keys = protected.load_key_records(url, FieldReader.key_ids(
        c for _, s in found for c in (s.label_sealed, s.score_sealed)))
    catalog = protection_catalog()
    out = []
    for typ, sealed in found:
        schema = catalog.schema(typ)
        specs = tuple(schema.field(name) for name in LABEL_SOURCES[typ])
        decisions = label_decisions(typ, decide(typ, specs))
        out.append(open_label(reader, typ, sealed, decisions, keys))
    return out
