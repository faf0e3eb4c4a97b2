"""Issue 14, item 7: model labels are sealed like the text they were read from.

The labels of a transaction (read from its confidential counterparty and memo) are stored
under the subject's confidential data key: no label or score is in clear in ``inferences``,
a reader opens them with the confidential tier key where the policy allows every field the
model read, and after ``attest forget`` a copy of the ciphertext no longer opens.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from access.policy import AccessDecision, AccessReason, Approval, decide_fields, load_policy
from agents.enrichment import Enrichment
from agents.messages import IncomingMessage
from config.settings import Settings
from inference.labels import (
    LabelToSeal,
    SealedLabel,
    label_catalog,
    label_protector,
    label_tier,
    open_label,
)
from inference.tasks import Classification, load_prototypes
from protection.errors import KeyNotHeld
from protection.fields import FieldProtector, subject_reference
from protection.keyring import StaticKeyring
from protection.reader import FieldReader
from protection.tiers import FieldSpec, Tier, protection_catalog
from scenarios.finance import transaction_payloads
from schemas.catalog import DOCUMENT_V1, TRANSACTION_V1
from storage.db import engine_for
from storage.events import store_events
from storage.inferences import (
    Decide,
    inferences_for,
    read_labels,
    sealed_inferences_for,
    store_inferences,
)
from storage.key_maintenance import forget_subject
from storage.protected import load_key_records
from tests.protection.conftest import stored
from tests.support.events import verified_event

pytestmark = pytest.mark.integration

FINANCE = load_policy("finance")
LABELS = ("benefit_application_zz", "salary_zz")  # strings found nowhere else in the database


class _Classifier:
    """A model answering a fixed label: the sealing, not the model, is under test."""

    def __init__(self, label: str) -> None:
        self.label = label

    async def classify(self, task: str, texts: list[str], priority: object = None) -> list[Classification]:
        return [Classification(self.label, 0.875, "sealed-test@0001", task) for _ in texts]


def _message(offset: int) -> IncomingMessage:
    return IncomingMessage("t.transactions", 0, offset, None, b"", datetime.now(UTC))


def _analyst(now: datetime) -> Decide:
    """The finance policy's payments-analyst, with a level-2 approval (memo is level 2)."""
    approval = Approval(str(uuid.uuid4()), "req-1", "compliance-office", "carol@example.org", 2,
                        "approve", now)

    def decide(typ: str, specs: tuple[FieldSpec, ...]) -> Mapping[str, AccessDecision]:
        return decide_fields(FINANCE, "payments-analyst", specs, [approval],
                             reader="alice@example.org", now=now)
    return decide


async def _classified(settings: Settings, keyring: StaticKeyring, protector: FieldProtector,
                      label: str) -> tuple[dict, str]:
    """A stored transaction of a fresh account, classified as ``label`` by the enrichment."""
    account = f"DE{uuid.uuid4().int % 10**20:020d}"
    payload = transaction_payloads(1, "core-ledger", seed=uuid.uuid4().int % 10**6)[0]
    payload["account"] = account
    store_events(settings.database_url, stored([payload], TRANSACTION_V1), protector=protector)
    event = verified_event(payload, TRANSACTION_V1)
    enrichment = Enrichment(settings, _Classifier(label), actor="test",
                            keyring=keyring.restricted_to(()))
    audit = await enrichment.process([(_message(1), event)])
    assert [(r.action, r.outcome) for r in audit] == [("event.inferred", "ok")]
    # The append-only audit record names the task and model, never the label or score.
    assert set(audit[0].detail) == {"task", "model_version"}
    assert label.encode() not in audit[0].to_bytes() and b"0.875" not in audit[0].to_bytes()
    return payload, account


def test_a_label_takes_the_highest_tier_of_the_fields_the_model_read() -> None:
    assert label_tier(TRANSACTION_V1) is Tier.CONFIDENTIAL  # counterparty, memo
    assert label_tier(DOCUMENT_V1) is Tier.CONFIDENTIAL  # title (internal), body (confidential)
    catalog = label_catalog()
    for typ in (TRANSACTION_V1, DOCUMENT_V1):
        schema = catalog.schema(f"{typ}#inference")
        assert schema.table == "inferences"
        assert {n for n, f in schema.fields.items() if f.protected} == {"label", "score"}
        assert schema.subject_domain == protection_catalog().schema(typ).subject_domain


async def test_no_label_or_score_is_stored_in_clear(
    stack_settings: Settings, keyring: StaticKeyring, protector: FieldProtector,
) -> None:
    payload, _ = await _classified(stack_settings, keyring, protector, LABELS[1])
    with engine_for(stack_settings.database_url).connect() as conn:
        columns = {r[0] for r in conn.execute(text(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'inferences'"))}
        row = conn.execute(text("SELECT * FROM inferences WHERE event_id = :id"),
                           {"id": payload["event_id"]}).mappings().one()
        anywhere = conn.execute(text(
            "SELECT count(*) FROM inferences i WHERE i::text LIKE :l"
            " OR position(convert_to(:s, 'UTF8') IN i.label_sealed) > 0"
            " OR position(convert_to(:s, 'UTF8') IN i.score_sealed) > 0"),
            {"l": f"%{LABELS[1]}%", "s": LABELS[1]}).scalar_one()
    assert "label" not in columns and "score" not in columns
    assert anywhere == 0
    assert "0.875" not in repr(dict(row))
    assert row["department"] == payload["source"]


async def test_the_reader_opens_labels_with_the_tier_key_the_policy_allows(
    stack_settings: Settings, keyring: StaticKeyring, protector: FieldProtector,
) -> None:
    payload, _ = await _classified(stack_settings, keyring, protector, LABELS[1])
    url, now = stack_settings.database_url, datetime.now(UTC)
    analyst = FINANCE.role("payments-analyst")
    opened = read_labels(url, payload["event_id"], keyring.restricted_to(analyst.tiers),
                         _analyst(now))
    assert [(o.task, o.label, o.score, o.withheld) for o in opened] == [
        ("transaction_category", LABELS[1], 0.875, None)]

    # Without the approval memo is not readable, so neither is the label read from it.
    def unapproved(typ: str, specs: tuple[FieldSpec, ...]) -> Mapping[str, AccessDecision]:
        return decide_fields(FINANCE, "payments-analyst", specs, [], reader="alice@example.org",
                             now=now)
    refused = read_labels(url, payload["event_id"], keyring.restricted_to(analyst.tiers), unapproved)
    assert [(o.label, o.withheld) for o in refused] == [(None, "approval_missing")]

    # Allowed by the policy, but this process holds no confidential key (or, as the worker
    # that sealed it, no private tier key at all): nothing opens.
    for held in ((Tier.INTERNAL,), ()):
        with pytest.raises(KeyNotHeld):
            read_labels(url, payload["event_id"], keyring.restricted_to(held), _analyst(now))


async def test_after_forget_the_labels_are_gone_and_a_copy_no_longer_opens(
    stack_settings: Settings, keyring: StaticKeyring, protector: FieldProtector,
) -> None:
    payload, account = await _classified(stack_settings, keyring, protector, LABELS[0])
    other, _ = await _classified(stack_settings, keyring, protector, LABELS[1])
    url = stack_settings.database_url
    [(typ, copy)] = sealed_inferences_for(url, payload["event_id"])  # as a backup would hold it

    refs = {"account": subject_reference(keyring, "account", account)}
    outcome = forget_subject(url, refs, protection_catalog(), before_commit=lambda o: None)
    assert outcome.inferences == 1
    assert inferences_for(url, payload["event_id"]) == []
    assert len(inferences_for(url, other["event_id"])) == 1

    reader = FieldReader(keyring, label_catalog())
    allowed = {name: AccessDecision(label_catalog().field(f"{typ}#inference", name), "test",
                                    True, AccessReason.GRANTED, 1)
               for name in ("label", "score")}
    keys = load_key_records(url, FieldReader.key_ids([copy.label_sealed, copy.score_sealed]))
    gone = open_label(reader, typ, copy, allowed, keys)
    assert gone.label is None and gone.score is None
    assert gone.withheld and "forgotten" in gone.withheld

    # The other subject's label still opens.
    [still] = read_labels(url, other["event_id"], keyring, _analyst(datetime.now(UTC)))
    assert still.label == LABELS[1]


async def test_a_label_arriving_after_its_subject_was_forgotten_is_not_kept(
    stack_settings: Settings, keyring: StaticKeyring, protector: FieldProtector,
) -> None:
    """The enrichment stage lags intake: a forget may land between the event and its label.
    The label would be sealed under a fresh key and outlive the forget; it is dropped."""
    url = stack_settings.database_url
    account = f"DE{uuid.uuid4().int % 10**20:020d}"
    mine, other = transaction_payloads(2, "core-ledger", seed=uuid.uuid4().int % 10**6)
    mine["account"] = account
    store_events(url, stored([mine, other], TRANSACTION_V1), protector=protector)
    refs = {"account": subject_reference(keyring, "account", account)}
    forget_subject(url, refs, protection_catalog(), before_commit=lambda o: None)

    enrichment = Enrichment(stack_settings, _Classifier(LABELS[0]), actor="test",
                            keyring=keyring.restricted_to(()))
    await enrichment.process([(_message(1), verified_event(mine, TRANSACTION_V1)),
                              (_message(2), verified_event(other, TRANSACTION_V1))])
    assert inferences_for(url, mine["event_id"]) == []
    assert len(inferences_for(url, other["event_id"])) == 1


def test_the_stored_length_of_a_label_says_nothing_of_which_label_it_is(
    stack_settings: Settings, keyring: StaticKeyring,
) -> None:
    """Security review: unpadded, ``octet_length(label_sealed)`` named the label (AES-GCM
    keeps the plaintext's length). Every bundled label of both tasks is stored at one length,
    and a reader gets each back unchanged."""
    url, prototypes = stack_settings.database_url, load_prototypes()
    kinds = {"transaction_category": (TRANSACTION_V1, "core-ledger", "DE{:020d}", 10**20),
             "document_type": (DOCUMENT_V1, "tax-bureau", "{:012d}", 10**12)}
    labels, truth = [], {}
    for task, (typ, department, subject, bound) in kinds.items():
        for name in prototypes[task]:
            event_id = str(uuid.uuid4())
            labels.append(LabelToSeal(event_id, typ, task, "padding-test@0001",
                                      subject.format(uuid.uuid4().int % bound), department,
                                      name, 0.5))
            truth[event_id] = (typ, name)
    store_inferences(url, labels, label_protector(keyring.restricted_to(())))
    with engine_for(url).connect() as conn:
        lengths = conn.execute(text(
            "SELECT DISTINCT octet_length(label_sealed), octet_length(score_sealed)"
            " FROM inferences WHERE event_id::text = ANY(:ids)"), {"ids": list(truth)}).all()
    assert len(lengths) == 1

    # The rows have no event (sealed_inferences_for joins events): open them as stored.
    reader = FieldReader(keyring, label_catalog())
    with engine_for(url).connect() as conn:
        rows = conn.execute(text(
            "SELECT event_id::text AS event_id, task, model_version, department, label_sealed,"
            " score_sealed FROM inferences WHERE event_id::text = ANY(:ids)"),
            {"ids": list(truth)}).mappings().all()
    assert len(rows) == len(truth)
    for row in rows:
        typ, name = truth[row["event_id"]]
        sealed = SealedLabel(row["event_id"], row["task"], row["model_version"],
                             row["department"], bytes(row["label_sealed"]),
                             bytes(row["score_sealed"]))
        keys = load_key_records(url, FieldReader.key_ids([sealed.label_sealed,
                                                          sealed.score_sealed]))
        allowed = {n: AccessDecision(label_catalog().field(f"{typ}#inference", n), "test",
                                     True, AccessReason.GRANTED, 1) for n in ("label", "score")}
        opened = open_label(reader, typ, sealed, allowed, keys)
        assert (opened.label, opened.score) == (name, 0.5)
