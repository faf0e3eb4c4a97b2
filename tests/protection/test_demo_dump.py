"""Issue 4's proof: after the demo, a plain pg_dump holds none of the protected plaintext."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from audit.queries import find_records
from config.settings import Settings
from devstack import stack
from devstack.demo import DEMO_ACTOR, SOURCE
from scenarios.finance import transaction_payloads
from scenarios.government import AGENCIES, document_payloads
from schemas.catalog import DOCUMENT_V1, TRANSACTION_V1
from tests.protection.test_dump import _appears, _dump, _protected_values
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

SEED = 4242


def test_pg_dump_after_the_demo_has_no_protected_plaintext(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, dev_kafka_port=0, dev_postgres_port=0)
    info = stack.up(settings)  # already running, so the demo leaves it up for the dump
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATTEST_")}
        env.update({"ATTEST_STATE_DIR": str(tmp_path), "ATTEST_SESSION_TIMEOUT_S": "4"})
        demo = subprocess.run(
            [sys.executable, "-m", "cli.main", "demo", "--count", "60", "--tampered", "3",
             "--documents", "20", "--seed", str(SEED), "--timeout", "240"],
            env=env, capture_output=True, text=True, timeout=300, check=False,
        )
        assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
        assert "accepted" in demo.stdout

        dump = _dump(info.database_url)
        transactions = transaction_payloads(60, SOURCE, SEED)
        documents = document_payloads(20, SEED)
        secrets = (_protected_values(TRANSACTION_V1, transactions)
                   | _protected_values(DOCUMENT_V1, documents))
        assert len(secrets) > 150
        leaked = sorted(v for v in secrets if _appears(v, dump))
        assert leaked == []
        for doc in documents:
            assert re.sub(r"\D", "", doc["subject_id"]) not in dump
        # The search finds what is stored in clear: an empty result above means something.
        assert _appears(transactions[0]["event_id"], dump)
        assert _appears(documents[0]["agency"], dump)

        # Issue 9: the demo's key registrations are audited like `attest keys` ones.
        wanted = {SOURCE, *AGENCIES}
        added = wait_until(
            lambda: [r for r in find_records(info.database_url, action="key.added")
                     if r.actor == DEMO_ACTOR],
            lambda records: {r.detail["source"] for r in records} >= wanted, timeout_s=60)
        assert {r.detail["source"] for r in added} == wanted
    finally:
        stack.down(settings)
