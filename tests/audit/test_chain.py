"""The chain's pure functions on in-memory rows: encoding, checkpoints, and the verifier's
diagnosis of each kind of tampering (no database)."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.chain import GENESIS, canonical_bytes, format_time, hashed_view, json_safe, row_hash
from audit.checkpoints import CheckpointSigner, checkpoint_body, checkpoint_due, parse_checkpoint
from audit.verify import ChainRow, StoredCheckpoint, Verdict, verify_chain
from security.keyfiles import generate_key
from tests.audit.conftest import make_records


def build_chain(n: int) -> list[ChainRow]:
    rows, prev = [], GENESIS
    for seq, record in enumerate(make_records(n), start=1):
        view = hashed_view(record.model_dump())
        digest = row_hash(view, prev, seq)
        rows.append(ChainRow(seq, prev, digest, view))
        prev = digest
    return rows


def rehash(row: ChainRow, seq: int | None = None, prev: str | None = None) -> ChainRow:
    """What an attacker who knows the scheme writes: a self-consistent row."""
    seq = row.seq if seq is None else seq
    prev = row.prev_hash if prev is None else prev
    return ChainRow(seq, prev, row_hash(row.view, prev or "", seq), row.view)


def edited(row: ChainRow, **fields: object) -> ChainRow:
    return dataclasses.replace(row, view={**row.view, **fields})


def check(rows: list[ChainRow], checkpoints: list[StoredCheckpoint] | None = None,
          signer: CheckpointSigner | None = None) -> Verdict:
    return verify_chain(rows, checkpoints or [], [signer.verifier()] if signer else [])


def problem(rows: list[ChainRow], **kw: object) -> str:
    verdict = check(rows, **kw)  # type: ignore[arg-type]
    assert verdict.problem is not None, "tampering went unnoticed"
    return verdict.problem.message


def checkpoint(signer: CheckpointSigner, rows: list[ChainRow], seq: int) -> StoredCheckpoint:
    head = rows[seq - 1].row_hash or ""
    return StoredCheckpoint(seq, head, signer.sign(checkpoint_body(seq, head)))


# --- encoding ------------------------------------------------------------------------------


def test_encoding_is_rfc8785_not_json_dumps() -> None:
    view = hashed_view(make_records(1)[0].model_dump())
    view["detail"] = {"b": 56.0, "a": 1e21, "\u00e9": "x", "A": [0.1]}
    encoded = canonical_bytes(view, GENESIS, 1)
    assert b'"detail":{"A":[0.1],"a":1e+21,"b":56,"\xc3\xa9":"x"}' in encoded
    assert encoded != json.dumps({**view, "prev_hash": GENESIS, "seq": 1}, sort_keys=True).encode()
    assert b" " not in encoded.replace(b"acct-", b"")


def test_known_answer_pins_the_format() -> None:
    """A change of the encoding breaks every stored chain: this hash must never change."""
    record = make_records(1)[0]
    assert row_hash(hashed_view(record.model_dump()), GENESIS, 1) == KNOWN_ANSWER


KNOWN_ANSWER = "dedf3ce36e8247efcc5fc484b0656c7f80b3ebf2a18bead757a9b6f1610405fa"


def test_time_is_utc_with_microseconds() -> None:
    aware = datetime(2026, 1, 2, 4, 4, 5, 7, tzinfo=timezone(timedelta(hours=1)))
    assert format_time(aware) == "2026-01-02T03:04:05.000007Z"
    assert format_time(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05.000000Z"
    assert format_time(datetime(999, 1, 1, tzinfo=UTC)) == "0999-01-01T00:00:00.000000Z"


@pytest.mark.parametrize(("stored", "read_back"), [
    (1e20, 100000000000000000000),          # JSONB returns a big float as an integer
    (1.0, 1.0), (0.1, 0.1), (-0.0, 0.0),
    (2**60, 2**60),                        # not a float: kept exactly, as text
    (float(2**60), 1152921504606847000),
])
def test_json_safe_agrees_across_a_jsonb_round_trip(stored: object, read_back: object) -> None:
    assert canonical_bytes({"d": json_safe({"v": stored})}, GENESIS, 1) == canonical_bytes(
        {"d": json_safe({"v": read_back})}, GENESIS, 1)


def test_json_safe_makes_non_finite_and_odd_values_encodable() -> None:
    assert json_safe({"a": float("nan"), "b": (1, 2), 3: None}) == {"a": "nan", "b": [1, 2], "3": None}


# --- checkpoints ---------------------------------------------------------------------------


def test_checkpoint_is_a_signed_note(signer: CheckpointSigner) -> None:
    head = "ab" * 32
    note = signer.sign(checkpoint_body(42, head))
    lines = note.split("\n")
    assert lines[:3] == ["attest audit log", "42", "q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s="]
    assert lines[3] == "" and lines[4].startswith(f"\u2014 {signer.name} ")
    parsed = parse_checkpoint(note)
    assert (parsed.count, parsed.head_hash) == (42, head)


@pytest.mark.parametrize(("pending", "age", "due"), [
    (0, 10_000.0, False),   # only checkpoint records since the last one: never (no loop)
    (999, 1.0, False),
    (1000, 1.0, True),
    (1, 60.0, True),
    (1, None, False),
])
def test_checkpoint_decision(pending: int, age: float | None, due: bool) -> None:
    assert checkpoint_due(pending, age, every=1000, interval_s=60.0) is due


# --- verification: intact, and each kind of tampering --------------------------------------


def test_intact_chain_with_checkpoints(signer: CheckpointSigner) -> None:
    rows = build_chain(30)
    verdict = check(rows, [checkpoint(signer, rows, 10), checkpoint(signer, rows, 20)], signer)
    assert verdict == Verdict(records=30, checkpoints=2, last_checkpoint_seq=20, problem=None)
    assert check([]).records == 0


def test_edited_row_is_named() -> None:
    rows = build_chain(20)
    rows[11] = edited(rows[11], actor="operator:mallory")
    assert problem(rows) == f"row seq=12 (audit_id {rows[11].view['audit_id']}) was changed"


def test_edited_and_rehashed_row_is_named_by_its_successor() -> None:
    rows = build_chain(20)
    rows[11] = rehash(edited(rows[11], reason="fixed"))
    assert problem(rows).startswith(f"row seq=12 (audit_id {rows[11].view['audit_id']}) was changed")


def test_deleted_rows_leave_a_gap() -> None:
    rows = build_chain(20)
    assert problem(rows[:8] + rows[9:]) == "row seq=9 is missing (deleted)"
    assert problem(rows[:8] + rows[11:]) == "rows seq=9..11 are missing (deleted)"
    assert problem(rows[1:]) == "row seq=1 is missing (deleted)"


def test_deleted_row_with_renumbered_successors() -> None:
    rows = build_chain(20)
    moved = [dataclasses.replace(r, seq=r.seq - 1) for r in rows[10:]]
    assert problem(rows[:9] + moved).startswith("row seq=10 is missing (deleted)")


def test_row_inserted_at_the_end_with_a_wrong_link() -> None:
    rows = build_chain(20)
    extra = build_chain(21)[20]
    forged = rehash(dataclasses.replace(extra, prev_hash="f" * 64))
    assert problem(rows + [forged]) == f"row seq=21 (audit_id {extra.view['audit_id']}) was inserted"
    garbage = dataclasses.replace(extra, prev_hash=GENESIS, row_hash="0" * 64)
    assert problem(rows + [garbage]).startswith("row seq=21 (audit_id")


def test_row_inserted_in_the_middle_with_renumbering() -> None:
    rows = build_chain(20)
    intruder = rehash(dataclasses.replace(build_chain(21)[20], seq=10), prev=rows[8].row_hash)
    shifted = [dataclasses.replace(r, seq=r.seq + 1) for r in rows[9:]]
    message = problem(rows[:9] + [intruder] + shifted)
    assert message == f"row seq=10 (audit_id {intruder.view['audit_id']}) was inserted"
    careless = dataclasses.replace(intruder, prev_hash="e" * 64)
    assert problem(rows[:9] + [careless] + shifted).startswith("row seq=10 (audit_id")
    assert "inserted" in problem(rows[:9] + [careless] + shifted)


def test_swapped_rows_are_reordered() -> None:
    rows = build_chain(20)
    swapped = rows[:9] + [dataclasses.replace(rows[10], seq=10),
                          dataclasses.replace(rows[9], seq=11)] + rows[11:]
    assert problem(swapped) == "rows seq=10 and seq=11 are reordered"
    contents = rows[:9] + [dataclasses.replace(rows[9], view=rows[10].view),
                           dataclasses.replace(rows[10], view=rows[9].view)] + rows[11:]
    assert problem(contents) == "rows seq=10 and seq=11 are reordered"
    far = list(rows)
    far[4], far[7] = (dataclasses.replace(rows[7], seq=5), dataclasses.replace(rows[4], seq=8))
    assert problem(far) == "rows seq=5 and seq=8 are reordered"


def test_a_consistent_rewrite_is_caught_by_the_checkpoint(signer: CheckpointSigner) -> None:
    rows = build_chain(30)
    cps = [checkpoint(signer, rows, 10), checkpoint(signer, rows, 20)]
    rewritten, prev = rows[:14], rows[13].row_hash
    for row in rows[14:]:
        row = rehash(edited(row, actor="operator:mallory") if row.seq == 15 else row, prev=prev)
        rewritten.append(row)
        prev = row.row_hash
    assert check(rewritten).problem is None  # the chain alone cannot tell
    assert problem(rewritten, checkpoints=cps, signer=signer) == (
        "rows seq=11..20 were rewritten: the chain no longer matches the signed checkpoint "
        "at seq=20")


def test_a_cut_off_tail_is_caught_by_the_checkpoint(signer: CheckpointSigner) -> None:
    rows = build_chain(30)
    cps = [checkpoint(signer, rows, 10), checkpoint(signer, rows, 30)]
    assert problem(rows[:25], checkpoints=cps, signer=signer) == (
        "rows seq=26..30 are missing (deleted): the signed checkpoint at seq=30 covers them")


def test_forged_and_foreign_checkpoints(signer: CheckpointSigner) -> None:
    rows = build_chain(12)
    good = checkpoint(signer, rows, 10)
    forged_text = good.text.replace("attest audit log\n10\n", "attest audit log\n12\n")
    forged = StoredCheckpoint(12, rows[11].row_hash or "", forged_text)
    assert problem(rows, checkpoints=[good, forged], signer=signer) == (
        "the checkpoint at seq=12 has an invalid signature (forged or altered)")
    mallory = CheckpointSigner(generate_key("mallory"))
    foreign = checkpoint(mallory, rows, 12)
    assert problem(rows, checkpoints=[good, foreign], signer=signer) == (
        "the checkpoint at seq=12 is not signed by a trusted key")
    moved = dataclasses.replace(good, head_hash=rows[10].row_hash or "", last_seq=11)
    assert "was altered" in problem(rows, checkpoints=[moved], signer=signer)
    junk = StoredCheckpoint(10, good.head_hash, "hello")
    assert "is malformed" in problem(rows, checkpoints=[junk], signer=signer)


# --- the json.dumps fast path gives RFC 8785's bytes -----------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=600, deadline=None)
@given(detail=_json_values, text=st.text(), key=st.text(max_size=4))
def test_the_fast_encoding_is_byte_for_byte_rfc8785(detail: object, text: str, key: str) -> None:
    view = {"actor": text, "detail": detail, key: [text, 1, None, True], "n": 2**53 - 1}
    try:
        expected = rfc8785.dumps({**view, "prev_hash": GENESIS, "seq": 7})
    except Exception:  # noqa: BLE001 - what the library refuses, canonical_bytes refuses too
        with pytest.raises(Exception):  # noqa: B017, PT011
            canonical_bytes(view, GENESIS, 7)
        return
    assert canonical_bytes(view, GENESIS, 7) == expected


@pytest.mark.parametrize("text", ["\x00\x01\x1f\x7f", '"\\/', "\b\f\n\r\t", "\u2028\u2029",
                                  "\ue000\U0001f600", "é漢字", ""])
def test_the_fast_encoding_escapes_as_rfc8785(text: str) -> None:
    view = {"actor": text, "detail": {"k": text}}
    assert canonical_bytes(view, GENESIS, 1) == rfc8785.dumps(
        {**view, "prev_hash": GENESIS, "seq": 1})


def test_keys_are_ordered_by_utf16_code_units_as_rfc8785_says() -> None:
    # U+1F600 is the surrogate pair D83D DE00 in UTF-16, so it sorts before U+E000 there and
    # after it in Python's code-point order: such keys never take json.dumps's path.
    view = {"detail": {"\ue000": 1, "\U0001f600": 2, "a": 3}}
    encoded = canonical_bytes(view, GENESIS, 1)
    assert encoded == rfc8785.dumps({**view, "prev_hash": GENESIS, "seq": 1})
    assert encoded.index("\U0001f600".encode()) < encoded.index("\ue000".encode())
