"""Security review: a sealed label's length must not say which label it is.

AES-GCM keeps the plaintext's length. Sealed unpadded, the labels of a task had (nearly)
one ciphertext length each, so anyone holding ``inferences`` (a dump, a backup) read them
without a key. ``inference.labels`` pads every label and score to one length before sealing;
these tests seal and open in memory (no database), with the bundled prototypes' labels.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from access.policy import AccessDecision, AccessReason
from inference.labels import (
    LabelToSeal,
    SealedLabel,
    label_catalog,
    label_protector,
    label_typ,
    open_label,
    row_id,
    seal_labels,
)
from inference.tasks import DOCUMENT_TYPE, TRANSACTION_CATEGORY, load_prototypes
from protection.keyring import StaticKeyring, generate_keyring
from protection.reader import FieldReader, KeyRecords
from protection.tiers import protection_catalog
from schemas.catalog import DOCUMENT_V1, TRANSACTION_V1

TYPES = {TRANSACTION_CATEGORY: TRANSACTION_V1, DOCUMENT_TYPE: DOCUMENT_V1}
SOURCES = {TRANSACTION_V1: "core-ledger", DOCUMENT_V1: "tax-bureau"}


@pytest.fixture(scope="module")
def keyring() -> StaticKeyring:
    return generate_keyring(protection_catalog().domains)


def _subject(typ: str) -> str:
    n = uuid.uuid4().int
    return f"DE{n % 10**20:020d}" if typ == TRANSACTION_V1 else f"{n % 10**12:012d}"


def _to_seal(task: str, label: str, score: float) -> LabelToSeal:
    typ = TYPES[task]
    return LabelToSeal(str(uuid.uuid4()), typ, task, "m@1", _subject(typ), SOURCES[typ],
                       label, score)


def _open(keyring: StaticKeyring, typ: str, sealed: SealedLabel, keys: KeyRecords):
    reader = FieldReader(keyring, label_catalog())
    allowed = {name: AccessDecision(label_catalog().field(label_typ(typ), name), "test", True,
                                    AccessReason.GRANTED, 1) for name in ("label", "score")}
    return open_label(reader, typ, sealed, allowed, keys)


def _keys(batch: Any) -> KeyRecords:
    return KeyRecords({r.key_id: r for r in batch.data_keys},
                      {r.key_id: r for r in batch.wrapping_keys})


def test_every_label_of_every_task_seals_to_one_length(keyring: StaticKeyring) -> None:
    prototypes = load_prototypes()
    assert set(prototypes) == set(TYPES)
    items = [_to_seal(task, label, score)
             for task, labels in prototypes.items() for label in labels
             for score in (0.5, -0.123456789012345, 1.0, 3.4e-05)]
    sealed, batch = seal_labels(label_protector(keyring.restricted_to(())), items, 0)
    assert {len(s.label_sealed) for s in sealed} == {len(sealed[0].label_sealed)}
    assert {len(s.score_sealed) for s in sealed} == {len(sealed[0].score_sealed)}

    keys = _keys(batch)
    for item, row in zip(items, sealed, strict=True):
        opened = _open(keyring, item.typ, row, keys)
        assert (opened.label, opened.score, opened.withheld) == (item.label, item.score, None)


def test_labels_of_any_content_come_back_unchanged_at_one_length(keyring: StaticKeyring) -> None:
    """Padding is stripped by structure, never by trimming: a label's own spaces, quotes,
    backslashes and non-ASCII letters survive, and still seal to the common length."""
    from inference.labels import PADDED_BYTES, LabelTooLong

    odd = ["x", "ends in a space ", '"quoted"\\', "tête-à-tête", " ", "[]"]
    items = [_to_seal(TRANSACTION_CATEGORY, label, 0.25) for label in odd]
    sealed, batch = seal_labels(label_protector(keyring.restricted_to(())), items, 0)
    assert len({len(s.label_sealed) for s in sealed}) == 1
    keys = _keys(batch)
    assert [_open(keyring, i.typ, s, keys).label for i, s in zip(items, sealed, strict=True)] \
        == odd

    # The bundled labels fit with room to spare; one that does not is refused, naming its task.
    longest = max((label for labels in load_prototypes().values() for label in labels), key=len)
    assert len(longest) + 7 < PADDED_BYTES
    with pytest.raises(LabelTooLong, match="document_type"):
        seal_labels(label_protector(keyring.restricted_to(())),
                    [_to_seal(DOCUMENT_TYPE, "x" * PADDED_BYTES, 0.5)], 0)


@dataclass(frozen=True)
class _Row:
    event_id: str
    typ: str
    payload: Mapping[str, Any]


def test_a_row_sealed_before_padding_still_opens(keyring: StaticKeyring) -> None:
    """Rows sealed unpadded (a bare label and score, before this change) open unchanged."""
    item = _to_seal(DOCUMENT_TYPE, "tax_return", 0.75)
    schema = label_catalog().schema(label_typ(item.typ))
    protector = label_protector(keyring.restricted_to(()))
    batch = protector.seal_batch([_Row(row_id(item.event_id, item.task, item.model_version),
                                       schema.typ, {schema.subject_field: item.subject,
                                                    schema.department_field: item.department,
                                                    "label": item.label, "score": item.score})])
    [event] = batch.events
    old = SealedLabel(item.event_id, item.task, item.model_version, event.department,
                      event.columns["label"], event.columns["score"])
    opened = _open(keyring, item.typ, old, _keys(batch))
    assert (opened.label, opened.score) == ("tax_return", 0.75)
