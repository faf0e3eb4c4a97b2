"""Verifying a stored chain: walk it, check checkpoints, name the first problem (docs/audit.md)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from audit.chain import GENESIS, row_hash
from audit.checkpoints import NoteVerifier, ParsedCheckpoint, checkpoint_signed_by, parse_checkpoint

# --- verification: walk the chain, name the first problem ---------------------------------

_WINDOW = 16  # rows kept behind (and read ahead at a problem) to tell edits from moves


@dataclass(frozen=True)
class ChainRow:
    """One stored row as read back: position, chain columns and the hashed view."""

    seq: int
    prev_hash: str | None
    row_hash: str | None
    view: Mapping[str, Any]

    def fits(self, prev_hash: str | None, seq: int) -> bool:
        """Whether ``row_hash`` is the hash of this content at ``seq`` after ``prev_hash``."""
        return self.row_hash == row_hash(self.view, prev_hash or "", seq)

    @property
    def label(self) -> str:
        return f"seq={self.seq} (audit_id {self.view['audit_id']})"


@dataclass(frozen=True)
class StoredCheckpoint:
    last_seq: int
    head_hash: str
    text: str


@dataclass(frozen=True)
class Problem:
    kind: str  # changed | missing | inserted | reordered | rewritten | checkpoint
    seq: int  # the first row concerned
    message: str


@dataclass
class Verdict:
    records: int = 0
    checkpoints: int = 0
    last_checkpoint_seq: int = 0
    problem: Problem | None = None


def _span(first: int, last: int, verb: str) -> str:
    """``row seq=5 was`` / ``rows seq=5..7 were`` (``verb`` is 'was' or 'is')."""
    plural = {"was": "were", "is": "are"}[verb]
    return f"row seq={first} {verb}" if first == last else f"rows seq={first}..{last} {plural}"


def _missing(first: int, last: int, why: str = "") -> Problem:
    return Problem("missing", first, f"{_span(first, last, 'is')} missing (deleted){why}")


def _inserted(first: int, last: int, window: list[ChainRow]) -> Problem:
    named = {r.seq: f"row {r.label} was" for r in window if first == last}
    return Problem("inserted", first, f"{named.get(first) or _span(first, last, 'was')} inserted")


def _changed(row: ChainRow, why: str = "") -> Problem:
    return Problem("changed", row.seq, f"row {row.label} was changed{why}")


def _swapped(a: ChainRow, b: ChainRow) -> bool:
    """Rows whose seq numbers were swapped, or whose contents were swapped in place."""
    if a.fits(a.prev_hash, b.seq) and b.fits(b.prev_hash, a.seq):
        return True
    return (b.row_hash == row_hash(a.view, b.prev_hash or "", b.seq)
            and a.row_hash == row_hash(b.view, a.prev_hash or "", a.seq))


def _diagnose(row: ChainRow, window: list[ChainRow], ahead: list[ChainRow]) -> Problem:
    """Explain why ``row`` does not continue the verified ``window``; ``ahead`` follows it.

    A deletion leaves a gap in seq (or, if later rows were renumbered, a row whose hash fits
    a later seq); an edit breaks the row's own hash; an insertion is a row that the next one
    links past (or a chain that links back over it); a reorder is two rows whose hashes fit
    each other's positions.
    """
    pred = window[-1] if window else None
    want_seq, want_prev = (pred.seq + 1, pred.row_hash) if pred else (1, GENESIS)
    if row.seq > want_seq:
        return _missing(want_seq, row.seq - 1)
    for other in ahead:
        if _swapped(row, other):
            return Problem("reordered", row.seq,
                           f"rows seq={row.seq} and seq={other.seq} are reordered")
    if row.prev_hash == want_prev:
        return _changed(row)
    for older in reversed(window[:-1]):  # the row links back past rows that were slipped in
        if row.prev_hash == older.row_hash:
            return _inserted(older.seq + 1, want_seq - 1, window)
    for shift in range(1, _WINDOW + 1):  # rows deleted, and the later ones renumbered
        if row.fits(row.prev_hash, row.seq + shift):
            return _missing(row.seq, row.seq + shift - 1, "; later rows were renumbered")
    nxt = ahead[0] if ahead and ahead[0].seq == row.seq + 1 else None
    if nxt is None or nxt.prev_hash == want_prev:  # the chain goes on past it, or it is last
        return _inserted(row.seq, row.seq, [row])
    if row.prev_hash == GENESIS and pred is not None:
        return _inserted(1, want_seq - 1, window)
    if pred is not None and row.fits(row.prev_hash, row.seq):
        return _changed(pred, f": row seq={row.seq} recorded a different hash for it")
    return _changed(row)


def _signed_text(cp: StoredCheckpoint, where: str, altered: str,
                 verifiers: list[NoteVerifier]) -> tuple[ParsedCheckpoint | None, Problem | None]:
    """A checkpoint's own checks, stored or published: it parses, a trusted key signed it,
    and its columns say what its signed text says (``altered`` words that last failure)."""
    try:
        parsed = parse_checkpoint(cp.text)
    except ValueError as exc:
        return None, Problem("checkpoint", cp.last_seq, f"{where} is malformed ({exc})")
    signed = checkpoint_signed_by(parsed, verifiers)
    if signed is False:
        return None, Problem("checkpoint", cp.last_seq,
                             f"{where} has an invalid signature (forged or altered)")
    if signed is None:
        return None, Problem("checkpoint", cp.last_seq, f"{where} is not signed by a trusted key")
    if parsed.count != cp.last_seq or parsed.head_hash != cp.head_hash:
        return None, Problem("checkpoint", cp.last_seq, f"{where} {altered}")
    return parsed, None


def _check_checkpoint(
    cp: StoredCheckpoint, seq: int, head: str, covered: int, verifiers: list[NoteVerifier]
) -> Problem | None:
    """One checkpoint against the chain verified up to ``seq`` (whose hash is ``head``)."""
    where = f"checkpoint at seq={cp.last_seq}"
    parsed, problem = _signed_text(cp, f"the {where}",
                                   "was altered: its columns disagree with its signed text", verifiers)
    if parsed is None:
        return problem
    if parsed.count > seq:
        return _missing(seq + 1, parsed.count,
                        f": the signed checkpoint at seq={parsed.count} covers them")
    if parsed.count < seq or parsed.head_hash != head:
        return Problem("rewritten", covered + 1, f"{_span(covered + 1, seq, 'was')} rewritten: "
                       f"the chain no longer matches the signed {where}")
    return None


def _witness_problem(witness: StoredCheckpoint, verifiers: list[NoteVerifier]) -> Problem | None:
    """The published checkpoint's own checks: it parses, and a trusted key signed it."""
    return _signed_text(witness, f"the audit topic's checkpoint at seq={witness.last_seq}",
                        "disagrees with its signed text", verifiers)[1]


def _against_witness(witness: StoredCheckpoint, seq: int, head: str, covered: int) -> Problem | None:
    """The verified chain (up to ``seq``, hash ``head``) against the published checkpoint.

    Called at the witness's seq, or at the end of a log shorter than it. ``covered`` is the
    last stored checkpoint verified so far.
    """
    where = f"the audit topic's checkpoint at seq={witness.last_seq}"
    if witness.last_seq > seq:
        after = f" after the last stored checkpoint (seq={covered})" if covered else ""
        return _missing(seq + 1, witness.last_seq,
                        f"{after}: {where} proves they existed")
    if head != witness.head_hash and covered >= seq:  # two signed heads for one seq
        return Problem("rewritten", seq, f"the log up to seq={seq} no longer matches {where}: "
                       f"the stored checkpoint at seq={covered} signs a different head")
    if head != witness.head_hash:
        return Problem("rewritten", covered + 1, f"{_span(covered + 1, seq, 'was')} rewritten: "
                       f"the chain no longer matches {where}")
    return None


def verify_chain(
    rows: Iterable[ChainRow], checkpoints: Iterable[StoredCheckpoint],
    verifiers: list[NoteVerifier], witness: StoredCheckpoint | None = None,
) -> Verdict:
    """Recompute the chain over ``rows`` (seq order) and check ``checkpoints`` (last_seq order).

    ``witness``: a checkpoint kept outside the database (the newest one published on the
    audit topic). It must be signed by a trusted key (else that is the problem reported,
    after any in the chain itself); the chain must then reach its seq with its head hash,
    so a tail deleted together with the stored checkpoints that covered it is caught.
    Streams rows and checkpoints: memory stays flat however long the log is (16 rows).
    """
    forged = _witness_problem(witness, verifiers) if witness is not None else None
    if forged is not None:  # never compared with; reported unless the chain fails first
        witness = None
    rows_it, ahead = iter(rows), deque[ChainRow]()
    window: deque[ChainRow] = deque(maxlen=_WINDOW)
    cps = iter(checkpoints)
    cp = next(cps, None)
    verdict, seq, head = Verdict(), 0, GENESIS
    while (row := ahead.popleft() if ahead else next(rows_it, None)) is not None:
        if not (row.seq == seq + 1 and row.prev_hash == head and row.fits(head, row.seq)):
            while len(ahead) < _WINDOW and (more := next(rows_it, None)) is not None:
                ahead.append(more)
            verdict.problem = _diagnose(row, list(window), list(ahead))
            return verdict
        window.append(row)
        seq, head = row.seq, row.row_hash or ""
        verdict.records += 1
        while cp is not None and cp.last_seq <= seq:
            if (problem := _check_checkpoint(cp, seq, head, verdict.last_checkpoint_seq,
                                             verifiers)) is not None:
                verdict.problem = problem
                return verdict
            verdict.checkpoints += 1
            verdict.last_checkpoint_seq = cp.last_seq
            cp = next(cps, None)
        if witness is not None and seq == witness.last_seq and (
                problem := _against_witness(witness, seq, head, verdict.last_checkpoint_seq)):
            verdict.problem = problem
            return verdict
    if cp is not None:  # a checkpoint beyond the last row: the tail was cut off
        verdict.problem = _check_checkpoint(cp, seq, head, verdict.last_checkpoint_seq, verifiers)
    elif witness is not None and witness.last_seq > seq:  # ...and its stored checkpoints too
        verdict.problem = _against_witness(witness, seq, head, verdict.last_checkpoint_seq)
    if verdict.problem is None:
        verdict.problem = forged
    return verdict
