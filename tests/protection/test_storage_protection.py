"""Protected storage against the real Postgres: what lands where, who can read it back."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError

from access.policy import decide_fields, load_policy
from agents.intake import IntakeProcessor
from agents.messages import IncomingMessage
from config.settings import Settings
from protection.fields import FieldProtector, subject_reference
from protection.keyring import StaticKeyring
from protection.reader import FieldReader
from protection.tiers import Tier, protection_catalog
from scenarios.finance import transaction_payloads
from scenarios.government import SOCIAL_SECURITY, TAX_BUREAU, document_payloads, people
from schemas.catalog import DOCUMENT_V1, TRANSACTION_V1
from security.keyfiles import generate_key
from storage import keys as registry
from storage.db import engine_for
from storage.errors import DatabaseRefused
from storage.events import store_events
from storage.key_maintenance import ForgetOutcome, forget_subject
from storage.protected import RowFilter, read_protected
from streams.producer import sign_payload
from streams.topics import DOCUMENTS
from tests.protection.conftest import stored

pytestmark = pytest.mark.integration
CATALOG = protection_catalog()
GOVERNMENT = load_policy("government")
NOW = datetime.now(UTC)


def _read(url: str, keyring: StaticKeyring, role: str, subject: str,
          approvals: list | None = None) -> dict[str, dict[str, object]]:
    """What ``role`` reads of ``subject``'s documents, as {event_id: {field: value}}."""
    schema = CATALOG.schema(DOCUMENT_V1)
    policy_role = GOVERNMENT.role(role)
    decisions = decide_fields(GOVERNMENT, role, schema.fields.values(), approvals or [],
                              reader="robin", now=datetime.now(UTC))
    allowed = {n: d for n, d in decisions.items() if d.allowed and d.protected}
    rows, keys = read_protected(
        url, db_role=GOVERNMENT.department_of(policy_role).db_role, schema=schema,
        columns=list(allowed),
        where=RowFilter(subject_index=subject_reference(keyring, "national_id", subject)),
        key_ids_of=FieldReader.key_ids)
    reader = FieldReader(keyring.restricted_to(policy_role.tiers))
    out = {}
    for row in rows:
        opened = reader.open_fields(DOCUMENT_V1, row.event_id, row.ciphertexts, allowed, keys,
                                    department=row.department)
        out[row.event_id] = {**row.public, **{n: r.value for n, r in opened.items()}}
    return out


def _approved(level: int) -> list:
    from access.policy import Approval

    return [Approval("ap", "REQ", "data-protection-office", "kim", level, "approve",
                     datetime.now(UTC))]


def test_public_fields_stay_in_clear_and_the_rest_is_sealed(
    database_url: str, keyring: StaticKeyring, protector: FieldProtector,
) -> None:
    docs = document_payloads(4, seed=101)
    txs = transaction_payloads(3, "core-ledger", seed=102)
    out = store_events(database_url, stored(docs, DOCUMENT_V1), protector=protector)
    store_events(database_url, stored(txs, TRANSACTION_V1), protector=protector)
    assert out.inserted == {d["event_id"] for d in docs}
    with engine_for(database_url).connect() as conn:
        payloads = dict(conn.execute(text("SELECT event_id::text, payload FROM events "
                                          "WHERE event_id = ANY(CAST(:ids AS uuid[]))"),
                                     {"ids": [d["event_id"] for d in docs + txs]}).all())
        fields = {r.event_id: r for r in conn.execute(text(
            "SELECT event_id::text, department, income, subject_id, subject_id_bidx, title "
            "FROM document_fields WHERE event_id = ANY(CAST(:ids AS uuid[]))"),
            {"ids": [d["event_id"] for d in docs]})}
    for payload in docs + txs:
        typ = DOCUMENT_V1 if "agency" in payload else TRANSACTION_V1
        public = {n for n, f in CATALOG.schema(typ).fields.items() if not f.protected}
        assert set(payloads[payload["event_id"]]) == public & set(payload)
    for doc in docs:
        row = fields[doc["event_id"]]
        assert row.department == doc["agency"]
        assert doc["subject_id"].encode() not in bytes(row.subject_id)
        assert bytes(row.subject_id_bidx) == subject_reference(keyring, "national_id",
                                                               doc["subject_id"])
        assert (row.income is None) == ("income" not in doc)


def test_redeliveries_and_replays_keep_their_meaning_with_protection(
    database_url: str, protector: FieldProtector,
) -> None:
    first, second = transaction_payloads(2, "core-ledger", seed=103)
    events = stored([first, second], TRANSACTION_V1)
    assert store_events(database_url, events, protector=protector).inserted == {
        first["event_id"], second["event_id"]}
    again = store_events(database_url, events[:1], protector=protector)
    assert again.redelivered == {first["event_id"]} and not again.inserted
    replay = store_events(database_url, stored([second], TRANSACTION_V1), protector=protector)
    assert replay.replayed == {second["event_id"]}
    with engine_for(database_url).connect() as conn:
        count = conn.execute(text("SELECT count(*) FROM transaction_fields "
                                  "WHERE event_id = ANY(CAST(:i AS uuid[]))"),
                             {"i": [first["event_id"], second["event_id"]]}).scalar_one()
    assert count == 2


def test_each_department_reads_its_own_fields_of_its_own_rows(
    database_url: str, keyring: StaticKeyring, protector: FieldProtector,
) -> None:
    person = people(1, seed=104)[0]
    docs = document_payloads(2, seed=104, population=[person])
    store_events(database_url, stored(docs, DOCUMENT_V1), protector=protector)
    tax_doc = next(d for d in docs if d["agency"] == TAX_BUREAU)
    social_doc = next(d for d in docs if d["agency"] == SOCIAL_SECURITY)

    # The tax inspector, with a second person's level-3 approval, sees the tax return only.
    tax = _read(database_url, keyring, "tax-inspector", person.national_id, _approved(3))
    assert set(tax) == {tax_doc["event_id"]}
    assert tax[tax_doc["event_id"]]["income"] == person.income
    assert tax[tax_doc["event_id"]]["tax_paid"] == tax_doc["tax_paid"]
    assert "subject_id" not in tax[tax_doc["event_id"]]

    # The social security officer, with a level-2 approval, sees the contribution record only.
    social = _read(database_url, keyring, "social-security-officer", person.national_id,
                   _approved(2))
    assert set(social) == {social_doc["event_id"]}
    assert social[social_doc["event_id"]]["insurance_status"] == person.insurance_status
    assert social[social_doc["event_id"]]["subject_id"] == social_doc["subject_id"]

    # Without approvals nothing protected is fetched at all.
    bare = _read(database_url, keyring, "tax-inspector", person.national_id)
    assert set(bare[tax_doc["event_id"]]) == set(
        n for n in tax_doc if not CATALOG.field(DOCUMENT_V1, n).protected)


def test_postgres_refuses_columns_a_department_was_not_granted(
    database_url: str, keyring: StaticKeyring,
) -> None:
    schema = CATALOG.schema(DOCUMENT_V1)
    for role, column in (("attest_social_security", "income"), ("attest_tax_bureau", "subject_id"),
                         ("attest_tax_bureau", "body")):
        with pytest.raises(DatabaseRefused, match="permission denied"):
            read_protected(database_url, db_role=role, schema=schema, columns=[column],
                           where=RowFilter(limit=1), key_ids_of=FieldReader.key_ids)


def test_row_level_security_hides_other_departments_rows(
    database_url: str, protector: FieldProtector,
) -> None:
    docs = document_payloads(6, seed=105)
    store_events(database_url, stored(docs, DOCUMENT_V1), protector=protector)
    ids = [d["event_id"] for d in docs]
    seen = {}
    for role in ("attest_social_security", "attest_tax_bureau"):
        with engine_for(database_url).begin() as conn:
            conn.execute(text(f"SET LOCAL ROLE {role}"))
            seen[role] = {r[0] for r in conn.execute(text(
                "SELECT department FROM document_fields WHERE event_id = ANY(CAST(:ids AS uuid[]))"),
                {"ids": ids})}
    assert seen == {"attest_social_security": {SOCIAL_SECURITY}, "attest_tax_bureau": {TAX_BUREAU}}
    # A finance department has no grant on documents at all.
    with engine_for(database_url).begin() as conn, pytest.raises(ProgrammingError,
                                                                 match="permission denied"):
        conn.execute(text("SET LOCAL ROLE attest_treasury"))
        conn.execute(text("SELECT department FROM document_fields LIMIT 1"))


def test_agencies_join_on_the_blind_index_without_decrypting(
    database_url: str, protector: FieldProtector,
) -> None:
    population = people(5, seed=106)
    docs = document_payloads(10, seed=106, population=population)
    store_events(database_url, stored(docs, DOCUMENT_V1), protector=protector)
    with engine_for(database_url).connect() as conn:
        pairs = conn.execute(text(
            "SELECT t.event_id, s.event_id FROM document_fields t JOIN document_fields s "
            "ON t.subject_id_bidx = s.subject_id_bidx "
            "WHERE t.department = :tax AND s.department = :social "
            "AND t.event_id = ANY(CAST(:ids AS uuid[])) AND s.event_id = ANY(CAST(:ids AS uuid[]))"),
            {"tax": TAX_BUREAU, "social": SOCIAL_SECURITY, "ids": [d["event_id"] for d in docs]},
        ).all()
    assert len(pairs) == len(population)


def test_a_subject_forgotten_while_the_writer_holds_its_key_gets_a_fresh_key(
    database_url: str, keyring: StaticKeyring, protector: FieldProtector,
) -> None:
    account = f"DE{uuid.uuid4().int % 10**20:020d}"
    before, after = transaction_payloads(2, "core-ledger", seed=107)
    before["account"] = after["account"] = account
    store_events(database_url, stored([before], TRANSACTION_V1), protector=protector)
    refs = {"account": subject_reference(keyring, "account", account)}
    outcomes: list[ForgetOutcome] = []
    outcome = forget_subject(database_url, refs, CATALOG, before_commit=outcomes.append)
    assert outcome.data_keys == 3 and outcome.event_ids == (before["event_id"],)
    assert outcomes == [outcome]

    # The writer still caches the destroyed keys: storing must notice and mint new ones.
    store_events(database_url, stored([after], TRANSACTION_V1), protector=protector)
    schema = CATALOG.schema(TRANSACTION_V1)
    finance = load_policy("finance")
    decisions = decide_fields(finance, "payments-analyst", schema.fields.values(), [],
                              reader="robin", now=datetime.now(UTC))
    allowed = {n: d for n, d in decisions.items() if d.allowed and d.protected}
    reader = FieldReader(keyring.restricted_to({Tier.INTERNAL, Tier.CONFIDENTIAL}))
    values = {}
    for event in (before, after):
        rows, keys = read_protected(database_url, db_role="attest_treasury", schema=schema,
                                    columns=list(allowed),
                                    where=RowFilter(event_id=event["event_id"]),
                                    key_ids_of=FieldReader.key_ids)
        values[event["event_id"]] = reader.open_fields(TRANSACTION_V1, rows[0].event_id,
                                                       rows[0].ciphertexts, allowed, keys,
                                                       department=rows[0].department)
    assert values[before["event_id"]]["amount"].forgotten
    assert values[after["event_id"]]["amount"].value == after["amount"]

    # Forgetting again destroys exactly the keys minted after the first forget.
    again = forget_subject(database_url, refs, CATALOG, before_commit=lambda o: None)
    assert again.data_keys == 3


def test_a_failing_audit_leaves_the_subject_intact(
    database_url: str, keyring: StaticKeyring, protector: FieldProtector,
) -> None:
    payload = transaction_payloads(1, "core-ledger", seed=108)[0]
    store_events(database_url, stored([payload], TRANSACTION_V1), protector=protector)
    refs = {"account": subject_reference(keyring, "account", payload["account"])}

    def refuse(outcome: ForgetOutcome) -> None:
        raise RuntimeError("audit unavailable")

    with pytest.raises(RuntimeError):
        forget_subject(database_url, refs, CATALOG, before_commit=refuse)
    with engine_for(database_url).connect() as conn:
        alive = conn.execute(text("SELECT count(*) FROM data_keys WHERE subject_ref = :r "
                                  "AND destroyed_at IS NULL"), {"r": refs["account"]}).scalar_one()
    assert alive >= 3


async def test_the_intake_stores_verified_documents_encrypted(
    stack_settings: Settings, keyring: StaticKeyring, protector: FieldProtector,
) -> None:
    url = stack_settings.database_url
    key = generate_key(TAX_BUREAU)
    registry.add_key(url, key.kid, key.source, key.alg, key.public_jwk)
    topic = DOCUMENTS.name(stack_settings)
    intake = IntakeProcessor(stack_settings, actor="test", accepted_types={topic: DOCUMENTS.accepted_types},
                             protector=protector)
    intake.replace_keys(registry.key_snapshot(url))
    docs = [d for d in document_payloads(6, seed=109) if d["agency"] == TAX_BUREAU]
    messages = [IncomingMessage(topic, 0, 10_000 + i, None, sign_payload(key, d, DOCUMENT_V1),
                                datetime.now(UTC)) for i, d in enumerate(docs)]
    output = await intake.process(messages)
    assert output.stored == len(docs) and not output.dead_letters
    stored_records = [r for r in output.audit if r.action == "event.stored"]
    assert all(r.detail["fields_encrypted"] for r in stored_records)
    with engine_for(url).connect() as conn:
        rows = conn.execute(text("SELECT e.payload, f.income FROM events e JOIN document_fields f "
                                 "USING (event_id) WHERE e.event_id = ANY(CAST(:ids AS uuid[]))"),
                            {"ids": [d["event_id"] for d in docs]}).all()
    assert len(rows) == len(docs)
    for payload, income in rows:
        assert "income" not in payload and "subject_id" not in payload
        assert income is not None
