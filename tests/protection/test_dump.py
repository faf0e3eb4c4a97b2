"""A plain pg_dump of a database holding stored events reveals no protected plaintext."""

from __future__ import annotations

import re
import subprocess
import uuid
from typing import Any

import pytest

from devstack.postgres import bin_dir
from protection.fields import FieldProtector
from protection.tiers import protection_catalog
from scenarios.finance import transaction_payloads
from scenarios.government import approval_payload, document_payloads
from schemas.catalog import APPROVAL_V1, DOCUMENT_V1, TRANSACTION_V1
from storage.events import store_events
from tests.support.events import stored_events

pytestmark = pytest.mark.integration
CATALOG = protection_catalog()


def _dump(url: str) -> str:
    result = subprocess.run([str(bin_dir() / "pg_dump"), "--no-password", "-d", url],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _appears(value: str, dump: str) -> bool:
    """Whether ``value`` occurs in the dump as a token of its own.

    A bare substring search would also "find" a short amount like 0.05 inside a timestamp
    (10:00:00.05...), a value date inside the public ``issued_at`` timestamp of the same day
    (2026-11-25T10:00 or 2026-11-25 10:00), or digits inside a hex ciphertext. A leaked field
    stands alone, between quotes (JSON), tabs (COPY data) or spaces: so the match must not touch
    a letter, digit, dot or colon, and must not run on into a time of day.
    """
    pattern = rf"(?<![0-9A-Za-z.:]){re.escape(value)}(?![0-9A-Za-z.]|[ T]\d)"
    return re.search(pattern, dump) is not None


def _protected_values(typ: str, payloads: list[dict[str, Any]]) -> set[str]:
    schema = CATALOG.schema(typ)
    return {str(v) for p in payloads for n, v in p.items() if schema.field(n).protected}


def test_pg_dump_contains_no_protected_plaintext(scratch_url: str, protector: FieldProtector) -> None:
    documents = document_payloads(40, seed=201)
    transactions = transaction_payloads(40, "core-ledger", seed=202)
    approvals = [approval_payload(f"REQ-{uuid.uuid4().hex[:8]}", "kim", 3, seed=i,
                                  reason=f"joint audit of case {uuid.uuid4().hex[:10]}")
                 for i in range(5)]
    for typ, payloads in ((DOCUMENT_V1, documents), (TRANSACTION_V1, transactions),
                          (APPROVAL_V1, approvals)):
        out = store_events(scratch_url, stored_events(payloads, typ), protector=protector)
        assert len(out.inserted) == len(payloads)

    dump = _dump(scratch_url)
    secrets = (_protected_values(DOCUMENT_V1, documents)
               | _protected_values(TRANSACTION_V1, transactions)
               | _protected_values(APPROVAL_V1, approvals))
    assert len(secrets) > 200
    leaked = sorted(v for v in secrets if _appears(v, dump))
    assert leaked == []
    # National ids also never appear in any spelling (digits only).
    for doc in documents:
        assert re.sub(r"\D", "", doc["subject_id"]) not in dump

    # The search does find what is stored in clear, so an empty result means something.
    public = [documents[0]["event_id"], documents[0]["agency"], transactions[0]["currency"],
              approvals[0]["request_id"], approvals[0]["approver"]]
    assert all(_appears(v, dump) for v in public)
