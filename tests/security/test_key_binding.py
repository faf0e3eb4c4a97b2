"""Issue 14, item 6: a key speaks only for the schemas and the department it is bound to.

A ``core-ledger`` key signed a document with ``agency: tax-bureau`` and it was stored in the
tax bureau's view. The registry now binds each key to schemas (``typ``) and a department;
the verifier refuses anything outside the binding as ``scope_mismatch``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scenarios.finance import transaction_payloads
from scenarios.government import TAX_BUREAU, document_payloads
from schemas.catalog import APPROVAL_V1, DOCUMENT_V1, EVENT_TYPES, TRANSACTION_V1
from security.errors import Rejection
from security.keyfiles import SigningKey, generate_key
from security.reasons import RejectReason
from security.registry import KeyRecord
from security.verification import VerificationPolicy, event_department, verify_event

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
ALL_TOPICS = VerificationPolicy(64 * 1024, timedelta(minutes=5), frozenset(EVENT_TYPES))
LEDGER = generate_key("core-ledger", kid="core-ledger-bound")


def record(key: SigningKey, **binding: Any) -> dict[str, KeyRecord]:
    return {key.kid: KeyRecord(key.kid, key.source, key.alg, key.public_jwk, **binding)}


def tax_document_from(source: str) -> dict[str, Any]:
    """The issue's event: a document the tax bureau would own, claiming ``source``."""
    document = next(d for d in document_payloads(2, seed=7, now=NOW) if d["agency"] == TAX_BUREAU)
    return {**document, "source": source}


def transaction_from(source: str) -> dict[str, Any]:
    return transaction_payloads(1, source, seed=3, now=NOW)[0]


def signed(key: SigningKey, payload: dict[str, Any], typ: str) -> bytes:
    return key.sign(json.dumps(payload).encode(), typ)


def rejection(raw: bytes, keys: dict[str, KeyRecord]) -> Rejection:
    with pytest.raises(Rejection) as caught:
        verify_event(raw, keys, NOW, ALL_TOPICS)
    return caught.value


def test_a_ledger_key_bound_to_transactions_cannot_file_a_tax_bureau_document() -> None:
    keys = record(LEDGER, typs=frozenset({TRANSACTION_V1}), department="core-ledger")
    raw = signed(LEDGER, tax_document_from("core-ledger"), DOCUMENT_V1)
    refused = rejection(raw, keys)
    assert refused.reason is RejectReason.SCOPE_MISMATCH
    assert refused.reason.value == "scope_mismatch"
    assert "attest.document.v1" in refused.detail and LEDGER.kid in refused.detail
    # ...while its own transactions still pass.
    event = verify_event(signed(LEDGER, transaction_from("core-ledger"), TRANSACTION_V1), keys,
                         NOW, ALL_TOPICS)
    assert event.typ == TRANSACTION_V1


def test_the_department_binding_alone_refuses_another_agency() -> None:
    """Bound to a department but to any schema: the document's agency decides."""
    keys = record(LEDGER, department="core-ledger")
    refused = rejection(signed(LEDGER, tax_document_from("core-ledger"), DOCUMENT_V1), keys)
    assert refused.reason is RejectReason.SCOPE_MISMATCH
    assert "'tax-bureau'" in refused.detail and "'core-ledger'" in refused.detail


def test_a_key_bound_to_its_agency_and_schema_is_accepted() -> None:
    bureau = generate_key(TAX_BUREAU, kid="tax-bureau-bound")
    keys = record(bureau, typs=frozenset({DOCUMENT_V1}), department=TAX_BUREAU)
    event = verify_event(signed(bureau, tax_document_from(TAX_BUREAU), DOCUMENT_V1), keys, NOW,
                         ALL_TOPICS)
    assert event.payload["agency"] == TAX_BUREAU
    # The same key may not sign approvals: they are not in its binding.
    approval = {"event_id": "0b7f3c1e-1111-4a4a-8a8a-123456789abc", "source": TAX_BUREAU,
                "issued_at": "2026-11-25T12:00:00Z", "request_id": "req-1",
                "approver": "dana", "level": 2, "decision": "approve"}
    assert rejection(signed(bureau, approval, APPROVAL_V1), keys).reason is RejectReason.SCOPE_MISMATCH


def test_keys_registered_before_the_binding_speak_for_anything_as_before() -> None:
    """NULL binding = any schema, any department: existing keys keep working."""
    keys = record(LEDGER)
    event = verify_event(signed(LEDGER, tax_document_from("core-ledger"), DOCUMENT_V1), keys, NOW,
                         ALL_TOPICS)
    assert event.payload["agency"] == TAX_BUREAU


def test_an_empty_schema_set_allows_no_schema() -> None:
    keys = record(LEDGER, typs=frozenset())
    raw = signed(LEDGER, transaction_from("core-ledger"), TRANSACTION_V1)
    assert rejection(raw, keys).reason is RejectReason.SCOPE_MISMATCH


def test_the_binding_is_checked_after_the_signature_and_the_schema() -> None:
    """Nothing in the payload is trusted before the signature: a forged token stays
    `bad_signature` and an invalid one `schema_invalid`, whatever it claims."""
    keys = record(LEDGER, typs=frozenset({TRANSACTION_V1}), department="core-ledger")
    forged = signed(generate_key("core-ledger", kid=LEDGER.kid), tax_document_from("core-ledger"),
                    DOCUMENT_V1)
    assert rejection(forged, keys).reason is RejectReason.BAD_SIGNATURE
    invalid = {**tax_document_from("core-ledger"), "title": 7}
    assert rejection(signed(LEDGER, invalid, DOCUMENT_V1), keys).reason is RejectReason.SCHEMA_INVALID


def test_the_department_is_the_schemas_department_field() -> None:
    assert event_department(TRANSACTION_V1, transaction_from("core-ledger")) == "core-ledger"
    assert event_department(DOCUMENT_V1, tax_document_from("core-ledger")) == TAX_BUREAU
    assert event_department("attest.unknown.v9", {"source": "x"}) is None
