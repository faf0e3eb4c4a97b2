"""An attacker with superuser SQL (triggers disabled) against a real chain: verify names the
row each time. Every test has a database of its own."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from audit.chain import hashed_view, row_hash
from audit.checkpoints import CheckpointSigner, checkpoint_body
from audit.log import CheckpointPolicy, append_chained, verify_stored_chain
from security.keyfiles import generate_key
from storage.db import engine_for
from tests.audit.conftest import make_records, tamper

pytestmark = pytest.mark.integration

_SELECT_ROW = ("SELECT seq, prev_hash, row_hash, audit_id, time, actor, action, outcome, reason, "
               "correlation_id, subject_ids, source_topic, source_partition, source_offset, detail "
               "FROM audit_log WHERE seq = :s")
_INSERT_ROW = ("INSERT INTO audit_log (seq, prev_hash, row_hash, audit_id, time, actor, action, "
               "outcome, reason, correlation_id, subject_ids, source_topic, source_partition, "
               "source_offset, detail) VALUES (:seq, :prev, :hash, :audit_id, :time, :actor, "
               ":action, :outcome, :reason, :correlation_id, :subject_ids, :source_topic, "
               ":source_partition, :source_offset, '{}'::jsonb)")


@pytest.fixture
def chain(chain_db: str, signer: CheckpointSigner) -> str:
    """30 records in batches of 5, a checkpoint every 10 (at seq 10, 20, 30)."""
    policy = CheckpointPolicy(every=10, interval_s=3600, signer=signer)
    for start in range(0, 30, 5):
        append_chained(chain_db, make_records(5, start=start), policy)
    return chain_db


def problem(url: str, signer: CheckpointSigner) -> str:
    verdict = verify_stored_chain(url, [signer.verifier()])
    assert verdict.problem is not None, "tampering went unnoticed"
    return verdict.problem.message


def audit_id(url: str, seq: int) -> str:
    with engine_for(url).connect() as conn:
        return str(conn.execute(text("SELECT audit_id FROM audit_log WHERE seq = :s"),
                                {"s": seq}).scalar_one())


def row_at(url: str, seq: int) -> dict[str, object]:
    with engine_for(url).connect() as conn:
        return dict(conn.execute(text(_SELECT_ROW), {"s": seq}).one()._mapping)


def forged_row(seq: int, prev: str, consistent: bool = True) -> dict[str, object]:
    record = make_records(1, start=500, actor="operator:mallory")[0].model_dump()
    record.update(audit_id=str(uuid.uuid4()), detail={})
    digest = row_hash(hashed_view(record), prev, seq) if consistent else "f" * 64
    return {**record, "seq": seq, "prev": prev, "hash": digest}


def test_untouched_chain_is_intact(chain: str, signer: CheckpointSigner) -> None:
    verdict = verify_stored_chain(chain, [signer.verifier()])
    assert (verdict.problem, verdict.records, verdict.checkpoints) == (None, 30, 3)


def test_edited_row(chain: str, signer: CheckpointSigner) -> None:
    tamper(chain, "UPDATE audit_log SET reason = 'approved' WHERE seq = 12")
    assert problem(chain, signer) == f"row seq=12 (audit_id {audit_id(chain, 12)}) was changed"


def test_edited_detail_only(chain: str, signer: CheckpointSigner) -> None:
    tamper(chain, "UPDATE audit_log SET detail = jsonb_set(detail, '{amount}', '0') WHERE seq = 3")
    assert problem(chain, signer) == f"row seq=3 (audit_id {audit_id(chain, 3)}) was changed"


def test_deleted_row(chain: str, signer: CheckpointSigner) -> None:
    tamper(chain, "DELETE FROM audit_log WHERE seq = 7")
    assert problem(chain, signer) == "row seq=7 is missing (deleted)"


def test_deleted_row_and_renumbered_rest(chain: str, signer: CheckpointSigner) -> None:
    tamper(chain, "DELETE FROM audit_log WHERE seq = 7",
           "UPDATE audit_log SET seq = -seq WHERE seq > 7",
           "UPDATE audit_log SET seq = -seq - 1 WHERE seq < 0")
    assert problem(chain, signer).startswith("row seq=7 is missing (deleted)")


def test_deleted_tail_is_caught_by_the_last_checkpoint(chain: str, signer: CheckpointSigner) -> None:
    tamper(chain, "DELETE FROM audit_log WHERE seq > 26")
    assert problem(chain, signer) == (
        "rows seq=27..30 are missing (deleted): the signed checkpoint at seq=30 covers them")


def test_row_inserted_at_the_end(chain: str, signer: CheckpointSigner) -> None:
    row = forged_row(31, prev="0" * 64)
    tamper(chain, _INSERT_ROW, params=row)
    assert problem(chain, signer) == f"row seq=31 (audit_id {row['audit_id']}) was inserted"


def test_row_inserted_in_the_middle(chain: str, signer: CheckpointSigner) -> None:
    prev = str(row_at(chain, 14)["row_hash"])
    row = forged_row(15, prev=prev)
    tamper(chain, "UPDATE audit_log SET seq = -seq WHERE seq >= 15",
           "UPDATE audit_log SET seq = -seq + 1 WHERE seq < 0", _INSERT_ROW, params=row)
    assert problem(chain, signer) == f"row seq=15 (audit_id {row['audit_id']}) was inserted"


def test_reordered_rows(chain: str, signer: CheckpointSigner) -> None:
    tamper(chain, "UPDATE audit_log SET seq = -1 WHERE seq = 10",
           "UPDATE audit_log SET seq = 10 WHERE seq = 11",
           "UPDATE audit_log SET seq = 11 WHERE seq = -1")
    assert problem(chain, signer) == "rows seq=10 and seq=11 are reordered"


def test_consistent_rewrite_is_caught_by_a_checkpoint(chain: str, signer: CheckpointSigner) -> None:
    """The attacker edits row 15 and recomputes every later hash: only checkpoints tell."""
    tamper(chain, "UPDATE audit_log SET actor = 'operator:mallory' WHERE seq = 15")
    prev = str(row_at(chain, 14)["row_hash"])
    for seq in range(15, 31):
        row = row_at(chain, seq)
        digest = row_hash(hashed_view(row), prev, seq)
        tamper(chain, "UPDATE audit_log SET prev_hash = :p, row_hash = :h WHERE seq = :s",
               params={"p": prev, "h": digest, "s": seq})
        prev = digest
    assert problem(chain, signer) == (
        "rows seq=11..20 were rewritten: the chain no longer matches the signed checkpoint "
        "at seq=20")


def test_forged_checkpoint_signature(chain: str, signer: CheckpointSigner) -> None:
    tamper(chain, "UPDATE audit_checkpoints SET checkpoint = regexp_replace(checkpoint, "
                  "'^(attest audit log\n20\n)[^\n]+', '\\1AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=')"
                  ", head_hash = repeat('0', 64) WHERE last_seq = 20")
    assert problem(chain, signer) == (
        "the checkpoint at seq=20 has an invalid signature (forged or altered)")


def test_checkpoint_by_a_foreign_key(chain: str, signer: CheckpointSigner) -> None:
    mallory = CheckpointSigner(generate_key("mallory"))
    head = str(row_at(chain, 25)["row_hash"])
    tamper(chain, "INSERT INTO audit_checkpoints (last_seq, count, head_hash, checkpoint, key_id) "
                  "VALUES (25, 25, :h, :c, :k)",
           params={"h": head, "c": mallory.sign(checkpoint_body(25, head)), "k": mallory.name})
    assert problem(chain, signer) == "the checkpoint at seq=25 is not signed by a trusted key"
