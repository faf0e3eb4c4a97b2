"""Model labels protected like the fields they were read from (issue 14, item 7).

A label says what a confidential text is ("benefit_application", "salary"), so it is sealed
exactly like that text: under the *subject's* data key of the highest tier among the fields
the model read (``LABEL_SOURCES`` and ``schemas/tiers.yaml``: a transaction's counterparty and
memo, a document's title and body, are confidential). The worker seals with public tier keys
only and cannot read a label back; ``attest forget`` destroys the subject's data keys, so its
labels no longer open, and deletes their rows as well.

Pure: no SQL and no broker. The sealing reuses ``protection.fields.FieldProtector`` with a
catalog of its own (``label_catalog``): one pseudo-schema per inferred event schema, stored
in ``inferences``, whose public fields (subject and department) are only there to pick the
key and bind the department, and are never stored.

Every label and score is padded to one length before sealing (``pad_sealed``): AES-GCM keeps
the plaintext's length, and unpadded the few labels of a task each had their own ciphertext
length, so a table dump named them without any key (security review, label length).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from types import MappingProxyType
from typing import Any

from access.policy import AccessDecision, AccessReason
from config.errors import AttestError
from protection.errors import FieldIntegrityError
from protection.fields import FieldProtector, SealedBatch
from protection.keyring import Keyring
from protection.reader import FieldReader, KeyRecords
from protection.tiers import (
    FieldSpec,
    ProtectionCatalog,
    SchemaProtection,
    Tier,
    protection_catalog,
)
from schemas.catalog import DOCUMENT_V1, TRANSACTION_V1

#: The fields a model reads, per event schema (``agents.enrichment.inference_text`` joins them).
LABEL_SOURCES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    TRANSACTION_V1: ("counterparty", "memo"),
    DOCUMENT_V1: ("title", "body"),
})
#: The table the sealed labels live in, and its two sealed columns.
TABLE = "inferences"
SEALED_COLUMNS = ("label", "score")
#: The length in bytes of every sealed label's and score's plaintext. The longest bundled
#: label, ``benefit_application``, takes 26 of them padded (``["benefit_application",""]``);
#: a label up to 41 ASCII characters fits.
PADDED_BYTES = 48


class LabelTooLong(AttestError, ValueError):
    """A label (or score) does not fit ``PADDED_BYTES`` once encoded: it is refused rather
    than sealed to a longer, and so recognisable, ciphertext. A configuration problem: the
    prototypes file (``inference/data/prototypes.json``) names a label too long."""


def _compact(value: Any) -> bytes:
    """``value`` as the field protector encodes it (``protection.fields``: compact JSON)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=True).encode("utf-8")


def pad_sealed(value: str | float, task: str) -> list[str | float]:
    """``value`` as sealed: ``[value, spaces]``, whose compact JSON is ``PADDED_BYTES`` long.

    A two-element list, not the value with spaces after it, so that the reader tells padded
    from unpadded rows by type alone (``unpad_sealed``), and a label ending in a space is
    still given back unchanged. Raises ``LabelTooLong`` naming ``task``.
    """
    used = len(_compact([value, ""]))
    if used > PADDED_BYTES:
        raise LabelTooLong(
            f"a {'label' if isinstance(value, str) else 'score'} of task {task!r} takes {used} "
            f"bytes encoded; sealed "
            f"labels and scores are padded to {PADDED_BYTES}, so it would be recognisable "
            f"by its length: shorten the label in the prototypes file")
    return [value, " " * (PADDED_BYTES - used)]


def unpad_sealed(opened: Any, column: str) -> Any:
    """The value ``pad_sealed`` padded; a value sealed before padding (a bare string or
    number) is given back as it is. Anything else was never written by ``seal_labels``."""
    if isinstance(opened, list):
        if len(opened) == 2 and isinstance(opened[1], str) and not opened[1].strip(" "):
            return opened[0]
        raise FieldIntegrityError(f"inferences.{column} opened to an unknown padding")
    return opened


def label_typ(typ: str) -> str:
    """The pseudo-schema of the labels of ``typ`` events (bound into each label's ciphertext)."""
    return f"{typ}#inference"


def label_tier(typ: str, catalog: ProtectionCatalog | None = None) -> Tier:
    """The highest tier among the fields the model reads for ``typ`` (at least internal)."""
    schema = (catalog or protection_catalog()).schema(typ)
    return max([Tier.INTERNAL, *(schema.field(name).tier for name in LABEL_SOURCES[typ])])


def row_id(event_id: str, task: str, model_version: str) -> str:
    """What a label's ciphertext is bound to: its row of ``inferences`` (the primary key)."""
    return f"{event_id}|{task}|{model_version}"


@cache
def label_catalog() -> ProtectionCatalog:
    """One pseudo-schema per inferred event schema: subject and department as in the source
    schema (public, never stored), ``label`` and ``score`` at ``label_tier``."""
    source = protection_catalog()
    schemas: dict[str, SchemaProtection] = {}
    for typ in LABEL_SOURCES:
        origin = source.schema(typ)
        pseudo = label_typ(typ)
        tier = label_tier(typ, source)
        fields = {
            origin.subject_field: FieldSpec(pseudo, origin.subject_field, Tier.PUBLIC),
            origin.department_field: FieldSpec(pseudo, origin.department_field, Tier.PUBLIC),
            **{name: FieldSpec(pseudo, name, tier) for name in SEALED_COLUMNS},
        }
        schemas[pseudo] = SchemaProtection(
            typ=pseudo, table=TABLE, subject_field=origin.subject_field,
            subject_domain=origin.subject_domain, department_field=origin.department_field,
            fields=MappingProxyType(fields))
    return ProtectionCatalog(MappingProxyType(schemas))


def label_protector(keyring: Keyring) -> FieldProtector:
    """The enrichment stage's sealer: the worker's keyring (public tier keys, index keys)."""
    return FieldProtector(keyring, label_catalog())


@dataclass(frozen=True, slots=True)
class LabelToSeal:
    """One classification of one event, with what picks its key (never stored in clear)."""

    event_id: str
    typ: str
    task: str
    model_version: str
    subject: Any = field(repr=False)
    department: str
    label: str = field(repr=False)
    score: float = field(repr=False)


@dataclass(frozen=True, slots=True)
class _Fields:
    """``protection.fields.EventFields`` for one label row."""

    event_id: str
    typ: str
    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class SealedLabel:
    """A label row as stored: its key columns, department, and the two ciphertexts."""

    event_id: str
    task: str
    model_version: str
    department: str
    label_sealed: bytes = field(repr=False)
    score_sealed: bytes = field(repr=False)


def seal_labels(protector: FieldProtector, labels: Iterable[LabelToSeal],
                shredding_epoch: int) -> tuple[list[SealedLabel], SealedBatch]:
    """Seal each label and score; the batch names the key records to store beside them.

    Both are padded to ``PADDED_BYTES`` first, so every row's ciphertexts have one length
    whatever the label; raises ``LabelTooLong`` (naming the task) for one that does not fit.
    """
    labels = list(labels)
    catalog = protector.catalog
    items = []
    for item in labels:
        schema = catalog.schema(label_typ(item.typ))
        items.append(_Fields(row_id(item.event_id, item.task, item.model_version), schema.typ, {
            schema.subject_field: item.subject, schema.department_field: item.department,
            "label": pad_sealed(item.label, item.task),
            "score": pad_sealed(float(item.score), item.task)}))
    batch = protector.seal_batch(items, shredding_epoch)
    sealed = [SealedLabel(item.event_id, item.task, item.model_version, s.department,
                          s.columns["label"], s.columns["score"])
              for item, s in zip(labels, batch.events, strict=True)]
    return sealed, batch


@dataclass(frozen=True, slots=True)
class OpenedLabel:
    """A label as a reader sees it: the values, or why there are none."""

    event_id: str
    task: str
    model_version: str
    label: str | None = None
    score: float | None = None
    #: Set when the label cannot be given: "forgotten ..." or the access refusal's reason.
    withheld: str | None = None


def label_decisions(typ: str, source: Mapping[str, AccessDecision]) -> dict[str, AccessDecision]:
    """The decision for a label: allowed only if every field the model read is allowed.

    ``source`` holds the access policy's decisions (``access.policy.decide_fields``) for the
    fields of ``LABEL_SOURCES[typ]``; the first refusal among them is the label's refusal.
    """
    schema = label_catalog().schema(label_typ(typ))
    needed = [source.get(name) for name in LABEL_SOURCES[typ]]
    given = [d for d in needed if d is not None]
    refused = next((d for d in given if not d.allowed), None)
    role = given[0].role if given else ""
    out = {}
    for name in SEALED_COLUMNS:
        spec = schema.field(name)
        if len(given) < len(needed):
            out[name] = AccessDecision(spec, role, False, AccessReason.NOT_GRANTED)
        elif refused is not None:
            out[name] = AccessDecision(spec, role, False, refused.reason, refused.level)
        else:
            approved = any(d.reason is AccessReason.APPROVED for d in given)
            out[name] = AccessDecision(spec, role, True,
                                       AccessReason.APPROVED if approved else AccessReason.GRANTED,
                                       max(d.level for d in given),
                                       tuple(sorted({a for d in given for a in d.approval_ids})))
    return out


def open_label(reader: FieldReader, typ: str, sealed: SealedLabel,
               decisions: Mapping[str, AccessDecision], keys: KeyRecords) -> OpenedLabel:
    """Open one label row with ``reader`` (a ``FieldReader`` over ``label_catalog()``).

    Raises ``protection.errors.KeyNotHeld`` when the reader's keyring lacks the label's tier,
    and ``FieldIntegrityError`` for a ciphertext moved to another row or department. Rows
    sealed before padding (a bare label and score) open as well.
    """
    head = (sealed.event_id, sealed.task, sealed.model_version)
    if not all(d.allowed for d in decisions.values()):
        reason = next(d.reason for d in decisions.values() if not d.allowed)
        return OpenedLabel(*head, withheld=str(reason.value))
    opened = reader.open_fields(
        label_typ(typ), row_id(*head),
        {"label": sealed.label_sealed, "score": sealed.score_sealed},
        decisions, keys, department=sealed.department)
    gone = opened["label"].forgotten or opened["score"].forgotten
    if gone:
        return OpenedLabel(*head, withheld=gone)
    return OpenedLabel(*head, label=str(unpad_sealed(opened["label"].value, "label")),
                       score=float(unpad_sealed(opened["score"].value, "score")))
