"""A rejection's detail goes to dead-letter headers and the append-only audit log: it must
never carry the value of a protected field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scenarios.finance import transaction_payloads
from schemas.catalog import TRANSACTION_V1
from security.errors import Rejection
from security.keyfiles import generate_key
from security.reasons import RejectReason
from security.registry import KeyRecord
from security.verification import VerificationPolicy, verify_event
from streams.producer import sign_payload


def test_schema_rejection_names_fields_and_rules_not_values() -> None:
    key = generate_key("core-ledger")
    snapshot = {key.kid: KeyRecord(key.kid, key.source, key.alg, key.public_jwk)}
    secret_account, secret_amount = "DE" + "7" * 70, "1,234.56"
    payload = {**transaction_payloads(1, key.source)[0],
               "account": secret_account, "amount": secret_amount}
    policy = VerificationPolicy(65536, timedelta(minutes=5), frozenset({TRANSACTION_V1}))
    with pytest.raises(Rejection) as caught:
        verify_event(sign_payload(key, payload, TRANSACTION_V1), snapshot, datetime.now(UTC), policy)
    assert caught.value.reason is RejectReason.SCHEMA_INVALID
    assert "account: maxLength" in caught.value.detail
    assert "amount: pattern" in caught.value.detail
    assert secret_account not in caught.value.detail and secret_amount not in caught.value.detail
