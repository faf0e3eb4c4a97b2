"""The audit hash chain and its signed checkpoints: pure functions, no database (docs/audit.md).

``row_hash`` = SHA-256 of the RFC 8785 (JCS) encoding of the record's fields plus ``prev_hash``
(the previous row's hash; 64 zeros for seq 1) and ``seq``: JCS, not ``json.dumps``, so an
auditor can recompute it in any language. A checkpoint is a C2SP signed note (origin, count,
base64 head hash) signed with the service's Ed25519 key: a head the database cannot forge.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from schemas.audit import AuditAction
from security.errors import UnusableKey
from security.keyfiles import SigningKey, generate_key, load_private_key
from security.signatures import b64url_decode, public_key_for

GENESIS = "0" * 64
ORIGIN = "attest audit log"
CHECKPOINT_ACTION = AuditAction.AUDIT_CHECKPOINT
SERVICE_KEY_SOURCE = "attest-audit"
HASHED_FIELDS = (
    "audit_id", "time", "actor", "action", "outcome", "reason", "correlation_id",
    "subject_ids", "source_topic", "source_partition", "source_offset", "detail",
)
_SAFE_INT = 2**53 - 1
_ED25519_NOTE_ALG = b"\x01"  # signed-note signature type byte for Ed25519


# --- canonical encoding and the row hash ---------------------------------------------


def format_time(value: datetime) -> str:
    """RFC 3339 UTC with exactly six fractional digits; a naive time is taken as UTC."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="microseconds") + "Z"


def json_safe(value: Any) -> Any:
    """Map a JSON value to one RFC 8785 can encode *and* that survives a JSONB round trip.

    JSONB stores numbers as exact decimals, so ``1e20`` comes back as the integer
    100000000000000000000, which JCS refuses (outside the IEEE-754 safe range). Applying
    this on both sides (before storing, and to what is read back) makes both hash the same.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if -_SAFE_INT <= value <= _SAFE_INT:
            return value
        try:
            as_float = float(value)
        except OverflowError:
            return str(value)
        return as_float if Decimal(repr(as_float)) == value else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return str(value)


def hashed_view(values: Mapping[str, Any]) -> dict[str, Any]:
    """The chain's view of a record (an ``AuditRecord`` dump or a database row mapping)."""
    view = {name: values.get(name) for name in HASHED_FIELDS}
    view["audit_id"] = str(uuid.UUID(str(view["audit_id"])))
    view["time"] = format_time(view["time"])
    view["subject_ids"] = list(view["subject_ids"] or [])
    view["detail"] = json_safe(view["detail"] or {})
    return view


def canonical_bytes(view: Mapping[str, Any], prev_hash: str, seq: int) -> bytes:
    """The exact bytes hashed for one row: JCS of the view plus ``prev_hash`` and ``seq``."""
    return rfc8785.dumps({**view, "prev_hash": prev_hash, "seq": seq})


def row_hash(view: Mapping[str, Any], prev_hash: str, seq: int) -> str:
    return hashlib.sha256(canonical_bytes(view, prev_hash, seq)).hexdigest()


def checkpoint_due(pending: int, age_s: float | None, every: int, interval_s: float) -> bool:
    """Whether the sink should sign a checkpoint now.

    ``pending`` counts records after the last checkpoint that are *not* checkpoint records:
    the sink reads its own checkpoint records back from the audit topic, and if they counted,
    each checkpoint would eventually cause the next one, forever, on an idle log.
    ``age_s``: seconds since the last checkpoint (or the first uncovered record).
    """
    if pending <= 0:
        return False
    return pending >= every or (age_s is not None and age_s >= interval_s)


# --- signed checkpoints (C2SP signed note) -----------------------------------------------


def checkpoint_body(count: int, head_hash: str) -> str:
    """The note text: origin, record count, base64 of the 32-byte head hash."""
    head = base64.b64encode(bytes.fromhex(head_hash)).decode("ascii")
    return f"{ORIGIN}\n{count}\n{head}\n"


def _key_hash(name: str, public: bytes) -> bytes:
    """Signed-note key id: SHA-256(name || LF || 0x01 || public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + _ED25519_NOTE_ALG + public).digest()[:4]


@dataclass(frozen=True)
class NoteVerifier:
    """A trusted public key for checkpoint signatures; ``name`` is the key's kid."""

    name: str
    public: bytes

    @classmethod
    def from_jwk(cls, jwk: dict[str, Any]) -> NoteVerifier:
        """From a public Ed25519 JWK (``attest audit pubkey``); raises ``UnusableKey``."""
        if not isinstance(jwk.get("kid"), str):
            raise UnusableKey("a checkpoint key needs a string 'kid'")
        return cls(jwk["kid"], public_key_for("Ed25519", jwk).public_bytes_raw())

    def verifies(self, body: str, signature_line: str) -> bool | None:
        """True/False for a line by this key; None when the line names another key."""
        try:
            _dash, name, blob = signature_line.split(" ")
            raw = base64.b64decode(blob, validate=True)
        except ValueError:
            return None
        if name != self.name or raw[:4] != _key_hash(self.name, self.public):
            return None
        try:
            ed25519.Ed25519PublicKey.from_public_bytes(self.public).verify(raw[4:], body.encode())
        except InvalidSignature:
            return False
        return True


class CheckpointSigner:
    """Signs checkpoint bodies with the service's Ed25519 key. Holds no state but the key."""

    def __init__(self, key: SigningKey) -> None:
        jwk = key._private_jwk
        self.name = key.kid
        self._private = ed25519.Ed25519PrivateKey.from_private_bytes(b64url_decode(jwk["d"]))
        self.public_jwk = key.public_jwk

    def sign(self, body: str) -> str:
        key_id = _key_hash(self.name, self.verifier().public)
        blob = base64.b64encode(key_id + self._private.sign(body.encode())).decode()
        return f"{body}\n\u2014 {self.name} {blob}\n"

    def verifier(self) -> NoteVerifier:
        return NoteVerifier.from_jwk(self.public_jwk)


@dataclass(frozen=True)
class ParsedCheckpoint:
    """A checkpoint split into its signed body and its signature lines."""

    count: int
    head_hash: str
    body: str
    signatures: tuple[str, ...]


def parse_checkpoint(text: str) -> ParsedCheckpoint:
    """Split a signed checkpoint; raises ``ValueError`` when it is not one of ours."""
    body, sep, sigs = text.partition("\n\n")
    body, lines = body + "\n", body.split("\n")
    if not sep:
        raise ValueError("no signature block")
    if len(lines) != 3 or lines[0] != ORIGIN or not lines[1].isdigit():
        raise ValueError("not an attest audit checkpoint")
    head = base64.b64decode(lines[2], validate=True)
    if len(head) != 32:
        raise ValueError("the head hash is not 32 bytes")
    signatures = tuple(line for line in sigs.split("\n") if line)
    if not signatures or not all(line.startswith("\u2014 ") for line in signatures):
        raise ValueError("malformed signature lines")
    return ParsedCheckpoint(int(lines[1]), head.hex(), body, signatures)


def checkpoint_signed_by(parsed: ParsedCheckpoint, verifiers: list[NoteVerifier]) -> bool | None:
    """True: a trusted key signed it; False: a trusted key's line is invalid; None: no such line."""
    verdicts = [v.verifies(parsed.body, line) for line in parsed.signatures for v in verifiers]
    if False in verdicts:
        return False
    return True if True in verdicts else None


def load_or_create_service_key(path: Path) -> SigningKey:
    """Attest's own Ed25519 key; the first caller creates it, mode 0600.

    Written to a private temporary file and then hard-linked into place, so a concurrent
    worker either sees no file or a complete one, and exactly one key ever wins.
    """
    if path.exists():
        return load_private_key(path)
    key = generate_key(SERVICE_KEY_SOURCE, "Ed25519")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump({"source": key.source, "jwk": key._private_jwk}, out)
        os.link(tmp, path)
    except FileExistsError:  # another process won the race: use its key
        return load_private_key(path)
    finally:
        tmp.unlink(missing_ok=True)
    return key


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


def _check_checkpoint(
    cp: StoredCheckpoint, seq: int, head: str, covered: int, verifiers: list[NoteVerifier]
) -> Problem | None:
    """One checkpoint against the chain verified up to ``seq`` (whose hash is ``head``)."""
    where = f"checkpoint at seq={cp.last_seq}"
    try:
        parsed = parse_checkpoint(cp.text)
    except ValueError as exc:
        return Problem("checkpoint", cp.last_seq, f"the {where} is malformed ({exc})")
    signed = checkpoint_signed_by(parsed, verifiers)
    if signed is False:
        return Problem("checkpoint", cp.last_seq,
                       f"the {where} has an invalid signature (forged or altered)")
    if signed is None:
        return Problem("checkpoint", cp.last_seq, f"the {where} is not signed by a trusted key")
    if parsed.count != cp.last_seq or parsed.head_hash != cp.head_hash:
        return Problem("checkpoint", cp.last_seq,
                       f"the {where} was altered: its columns disagree with its signed text")
    if parsed.count > seq:
        return _missing(seq + 1, parsed.count,
                        f": the signed checkpoint at seq={parsed.count} covers them")
    if parsed.count < seq or parsed.head_hash != head:
        return Problem("rewritten", covered + 1, f"{_span(covered + 1, seq, 'was')} rewritten: "
                       f"the chain no longer matches the signed {where}")
    return None


def verify_chain(
    rows: Iterable[ChainRow], checkpoints: Iterable[StoredCheckpoint],
    verifiers: list[NoteVerifier],
) -> Verdict:
    """Recompute the chain over ``rows`` (seq order) and check ``checkpoints`` (last_seq order).

    Streams both: memory stays flat however long the log is (a window of 16 rows).
    """
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
    if cp is not None:  # a checkpoint beyond the last row: the tail was cut off
        verdict.problem = _check_checkpoint(cp, seq, head, verdict.last_checkpoint_seq, verifiers)
    return verdict
