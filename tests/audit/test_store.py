"""The chained audit table against a real Postgres: appends, idempotency, triggers, role,
checkpoints, concurrency and the migration of pre-chain rows."""

from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InternalError

from audit.chain import GENESIS
from audit.checkpoints import CheckpointSigner
from audit.log import CheckpointPolicy, append_chained, append_records, chain_head, verify_stored_chain
from audit.queries import AuditQuery, query_records
from schemas.audit import AuditRecord
from storage import migrate
from storage.db import engine_for, normalise_url
from tests.audit.conftest import FreshDb, make_records

pytestmark = pytest.mark.integration


def test_appends_chain_from_genesis_and_verify(chain_db: str, signer: CheckpointSigner) -> None:
    assert chain_head(chain_db) == (0, GENESIS)
    policy = CheckpointPolicy(every=10, interval_s=3600, signer=signer)
    made = [append_chained(chain_db, make_records(5, start=i), policy) for i in range(0, 25, 5)]
    assert [r.stored for r in made] == [5] * 5
    assert [r.checkpoint.last_seq for r in made if r.checkpoint] == [10, 20]
    verdict = verify_stored_chain(chain_db, [signer.verifier()])
    assert (verdict.problem, verdict.records, verdict.checkpoints) == (None, 25, 2)
    with engine_for(chain_db).connect() as conn:
        first = conn.execute(text("SELECT prev_hash, seq FROM audit_log ORDER BY seq LIMIT 1")).one()
    assert first == (GENESIS, 1)


def test_redelivery_changes_nothing(chain_db: str) -> None:
    records = make_records(12)
    assert append_records(chain_db, records) == 12
    head = chain_head(chain_db)
    # The same records again, reordered, duplicated inside one batch, mixed with new ones.
    assert append_records(chain_db, list(reversed(records)) + records[:3]) == 0
    assert chain_head(chain_db) == head
    assert append_records(chain_db, records[5:] + make_records(2, start=100)) == 2
    assert chain_head(chain_db)[0] == 14
    assert verify_stored_chain(chain_db, []).problem is None


def test_numbers_survive_the_jsonb_round_trip(chain_db: str) -> None:
    odd = AuditRecord(audit_id=str(uuid.uuid4()), actor="t", action="odd",
                      detail={"big": 1e20, "int": 2**60, "one": 1.0, "nan": float("nan"),
                              "nested": [{"x": -0.0}]})
    assert append_records(chain_db, [odd]) == 1
    assert verify_stored_chain(chain_db, []).problem is None


@pytest.mark.parametrize("statement", [
    "UPDATE audit_log SET actor = 'mallory' WHERE seq = 1",
    "DELETE FROM audit_log WHERE seq = 1",
    "TRUNCATE audit_log",
    "DELETE FROM audit_checkpoints",
    "TRUNCATE audit_checkpoints",
])
def test_triggers_refuse_changes_even_to_the_owner(chain_db: str, signer: CheckpointSigner,
                                                  statement: str) -> None:
    append_chained(chain_db, make_records(3), CheckpointPolicy(1, 1.0, signer))
    with engine_for(chain_db).connect() as conn, pytest.raises(InternalError) as caught:
        conn.execute(text(statement))
    assert "is append-only" in str(caught.value.orig)
    assert chain_head(chain_db)[0] == 3


def test_attest_app_role_appends_but_cannot_change_or_disable(chain_db: str) -> None:
    as_app = make_url(normalise_url(chain_db)).update_query_dict(
        {"options": "-c role=attest_app"}).render_as_string(hide_password=False)
    assert append_records(as_app, make_records(4)) == 4  # the grants suffice for the sink
    assert query_records(as_app, AuditQuery(limit=10))[0].seq == 1
    for statement in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log",
                      "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only",
                      "UPDATE audit_checkpoints SET count = 0"):
        with engine_for(as_app).connect() as conn, pytest.raises(DBAPIError) as caught:
            conn.execute(text(statement))
        assert "permission denied" in str(caught.value.orig) or "must be owner" in str(
            caught.value.orig)
    engine_for(as_app).dispose()


def test_concurrent_appenders_keep_one_gapless_chain(chain_db: str, signer: CheckpointSigner
                                                     ) -> None:
    policy = CheckpointPolicy(every=50, interval_s=3600, signer=signer)
    errors: list[BaseException] = []

    def writer(offset: int) -> None:
        try:
            for i in range(10):
                batch = make_records(10, start=offset + i * 10)
                append_chained(chain_db, batch + batch[:2], policy)  # with duplicates
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n * 1000,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    verdict = verify_stored_chain(chain_db, [signer.verifier()])
    assert (verdict.problem, verdict.records) == (None, 400)
    assert verdict.checkpoints >= 7


def test_migration_chains_and_renumbers_existing_rows(new_database: FreshDb) -> None:
    url = new_database("0001")
    with engine_for(url).begin() as conn:
        for i, seq in enumerate((3, 4, 9, 10, 11, 40)):  # the old bigserial left gaps
            conn.execute(text(
                "INSERT INTO audit_log (seq, audit_id, time, actor, action, outcome, detail) "
                "VALUES (:seq, :id, now(), 'old', 'event.accepted', 'ok', :detail)"
            ), {"seq": seq, "id": str(uuid.uuid4()), "detail": f'{{"n": {i}.0, "e": 1e25}}'})
    engine_for(url).dispose()
    migrate.upgrade(url)
    with engine_for(url).connect() as conn:
        seqs = conn.execute(text("SELECT seq FROM audit_log ORDER BY seq")).scalars().all()
    assert seqs == [1, 2, 3, 4, 5, 6]
    assert verify_stored_chain(url, []).records == 6
    assert append_records(url, make_records(2)) == 2
    assert verify_stored_chain(url, []).problem is None
    migrate.upgrade(url, "0001")  # the downgrade works, and upgrading again re-chains
    migrate.upgrade(url)
    assert verify_stored_chain(url, []).records == 8
