"""``verify_chain`` with a witness: the newest checkpoint published on the audit topic, checked
against the chain in memory (no database, no broker). tests/audit/test_truncation.py runs the
same cases end to end through ``attest audit verify``."""

from __future__ import annotations

import pytest

from audit.checkpoints import CheckpointSigner
from audit.verify import StoredCheckpoint, Verdict, verify_chain
from security.keyfiles import generate_key
from tests.audit.test_chain import build_chain, checkpoint, rehash


@pytest.fixture
def signer() -> CheckpointSigner:
    return CheckpointSigner(generate_key("attest-audit"))


def verify(rows: list, stored: list[StoredCheckpoint], signer: CheckpointSigner,
           witness: StoredCheckpoint | None) -> Verdict:
    return verify_chain(rows, stored, [signer.verifier()], witness)


def test_witness_matching_the_log(signer: CheckpointSigner) -> None:
    rows = build_chain(30)
    stored = [checkpoint(signer, rows, s) for s in (10, 20, 30)]
    verdict = verify(rows, stored, signer, stored[-1])
    assert (verdict.problem, verdict.records, verdict.checkpoints) == (None, 30, 3)


def test_tail_cut_with_its_stored_checkpoints(signer: CheckpointSigner) -> None:
    rows = build_chain(30)
    stored = [checkpoint(signer, rows, s) for s in (10, 20, 30)]
    assert verify(rows[:25], stored[:2], signer, None).problem is None  # unnoticed without it
    verdict = verify(rows[:25], stored[:2], signer, stored[2])
    assert verdict.problem is not None
    assert verdict.problem.message == (
        "rows seq=26..30 are missing (deleted) after the last stored checkpoint (seq=20): "
        "the audit topic's checkpoint at seq=30 proves they existed")


def test_every_row_and_checkpoint_gone(signer: CheckpointSigner) -> None:
    rows = build_chain(10)
    verdict = verify([], [], signer, checkpoint(signer, rows, 10))
    assert verdict.problem is not None
    assert verdict.problem.message == (
        "rows seq=1..10 are missing (deleted): the audit topic's checkpoint at seq=10 proves "
        "they existed")


def test_rewritten_tail_after_the_last_stored_checkpoint(signer: CheckpointSigner) -> None:
    rows = build_chain(30)
    stored = [checkpoint(signer, rows, s) for s in (10, 20, 30)]
    forged, prev = rows[:20], rows[19].row_hash
    for row in rows[20:]:
        changed = rehash(row.__class__(row.seq, prev, row.row_hash,
                                       {**row.view, "actor": "operator:mallory"}))
        forged.append(changed)
        prev = changed.row_hash
    verdict = verify(forged, stored[:2], signer, stored[2])
    assert verdict.problem is not None
    assert verdict.problem.message == (
        "rows seq=21..30 were rewritten: the chain no longer matches the audit topic's "
        "checkpoint at seq=30")


def test_witness_by_another_key_is_refused(signer: CheckpointSigner) -> None:
    rows = build_chain(30)
    stored = [checkpoint(signer, rows, s) for s in (10, 20, 30)]
    mallory = CheckpointSigner(generate_key("mallory"))
    verdict = verify(rows, stored, signer, checkpoint(mallory, rows, 30))
    assert verdict.problem is not None
    assert verdict.problem.message == (
        "the audit topic's checkpoint at seq=30 is not signed by a trusted key")


def test_a_problem_in_the_chain_comes_before_a_forged_witness(signer: CheckpointSigner) -> None:
    rows = build_chain(30)
    stored = [checkpoint(signer, rows, s) for s in (10, 20, 30)]
    mallory = CheckpointSigner(generate_key("mallory"))
    del rows[6]
    verdict = verify(rows, stored, signer, checkpoint(mallory, build_chain(30), 30))
    assert verdict.problem is not None and verdict.problem.message == "row seq=7 is missing (deleted)"
