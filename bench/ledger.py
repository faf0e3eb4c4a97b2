"""A ledger of sent messages and the check of what the pipeline did with each of them.

Used by the fault suite (tests/faults/) and by ``attest bench soak``. Each message is planned
with the fate the product promises before it is sent (stored, or dead-lettered with a
reason); the producer's delivery report gives its partition and offset, so the check finds
it exactly where the product records it:

- every accepted event stored exactly once, at the position it was sent to;
- every rejected message dead-lettered, counted once by the dedupe key the product uses
  (source topic/partition/offset headers plus the SHA-256 of the value); raw copies beyond
  one per key are counted separately (issue 15 item 2: a crash between publishing a dead
  letter and committing the offset publishes it again, deduplicated on the read side);
- every decision audited exactly once (accepted, stored, inferred per event; rejected per
  rejection); ``audit_verify`` runs ``attest audit verify`` as an operator would.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field, replace

from sqlalchemy import text

from config.settings import Settings
from schemas.audit import AuditAction
from security.reasons import RejectReason
from storage.db import engine_for
from streams.dead_letters import read_letters
from streams.producer import OutgoingMessage, deliver

#: A planned rejection whose reason code is not pinned (the product may name it either way).
ANY_REASON = "*"


@dataclass
class Planned:
    """One message to send and what must become of it."""

    topic: str
    key: bytes | None
    value: bytes
    #: None: must be stored exactly once; otherwise the dead letter's reason code.
    reason: str | None
    event_id: str | None = None
    partition: int = -1
    offset: int = -1

    @property
    def position(self) -> tuple[str, int, int]:
        return (self.topic, self.partition, self.offset)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.value).hexdigest()


Position = tuple[str, int, int]
LetterKey = tuple[str, int, int, str]


@dataclass
class Outcome:
    """One snapshot of what the pipeline did with the planned messages."""

    sent: int = 0
    expected_stored: int = 0
    expected_rejected: int = 0
    stored: int = 0
    missing_stored: list[Position] = field(default_factory=list)
    unexpected_rows: list[tuple[str, Position]] = field(default_factory=list)
    dead_lettered: int = 0
    missing_letters: list[Position] = field(default_factory=list)
    wrong_reasons: list[tuple[Position, str, str]] = field(default_factory=list)
    unexpected_letters: list[LetterKey] = field(default_factory=list)
    raw_letters: int = 0
    raw_letter_duplicates: int = 0
    audit_missing: list[tuple[str, Position]] = field(default_factory=list)
    audit_duplicates: list[tuple[str, Position, int]] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return len(self.missing_stored) + len(self.missing_letters)

    @property
    def duplicated(self) -> int:
        """Effects the product shows twice: extra rows, extra letters by the dedupe key,
        decisions audited twice. Raw dead-letter copies are not here (see above)."""
        return len(self.unexpected_rows) + len(self.unexpected_letters) + len(self.audit_duplicates)

    @property
    def complete(self) -> bool:
        return (not self.missing_stored and not self.missing_letters and not self.audit_missing)

    def problems(self) -> list[str]:
        out = []
        for name in ("missing_stored", "unexpected_rows", "missing_letters", "wrong_reasons",
                     "unexpected_letters", "audit_missing", "audit_duplicates"):
            items = getattr(self, name)
            if items:
                out.append(f"{name}: {len(items)} e.g. {items[:3]}")
        return out


def _stored_rows(url: str) -> list[tuple[str, Position]]:
    with engine_for(url).connect() as conn:
        rows = conn.execute(text('SELECT event_id::text, topic, "partition", "offset" FROM events'))
        return [(r[0], (r[1], r[2], r[3])) for r in rows]


_DECISIONS = (AuditAction.EVENT_ACCEPTED, AuditAction.EVENT_STORED, AuditAction.EVENT_REJECTED,
              AuditAction.EVENT_INFERRED)


def _audit_counts(url: str) -> Counter[tuple[str, Position, str | None]]:
    """Decisions per (action, source position, event id); the event id is left out of
    rejections, whose claimed id is whatever the (possibly tampered) bytes say."""
    with engine_for(url).connect() as conn:
        rows = conn.execute(text(
            "SELECT action, source_topic, source_partition, source_offset, "
            "CASE WHEN action = :rejected THEN NULL ELSE correlation_id END, count(*) "
            "FROM audit_log WHERE action = ANY(:actions) GROUP BY 1, 2, 3, 4, 5"),
            {"actions": [str(a) for a in _DECISIONS], "rejected": str(AuditAction.EVENT_REJECTED)})
        return Counter({(r[0], (r[1], r[2], r[3]), r[4]): int(r[5]) for r in rows})


def _letters(settings: Settings) -> list[tuple[LetterKey, str]]:
    out = []
    for letter in read_letters(settings):
        h = letter.headers
        try:
            key = (h["attest-source-topic"], int(h["attest-source-partition"]),
                   int(h["attest-source-offset"]), hashlib.sha256(letter.value).hexdigest())
        except (KeyError, ValueError):
            key = ("?", -1, letter.offset, hashlib.sha256(letter.value).hexdigest())
        out.append((key, letter.reason))
    return out


def resolve_replays(planned: list[Planned], stored_at: dict[str, Position]) -> list[Planned]:
    """Which copy of a replayed message is the stored one, and which the replays.

    Copies of one message (same bytes) are planned as an original and ``replayed`` copies.
    The product promises one of them stored and every other dead-lettered as ``replayed``;
    it does not promise the first in partition order, since intake works on several batches
    of a partition at once (``ATTEST_INTAKE_CONCURRENCY``). When a copy is the stored one, it
    and the original swap their planned fates.
    """
    originals = {p.value: p for p in planned if p.reason is None}
    winners: dict[bytes, Planned] = {}
    for p in planned:
        if (p.reason == RejectReason.REPLAYED and p.value in originals
                and stored_at.get(p.event_id or "") == p.position):
            winners[p.value] = p
    if not winners:
        return planned
    out = []
    for p in planned:
        if p.value in winners:
            if p is winners[p.value]:
                p = replace(p, reason=None)
            elif p.reason is None:
                p = replace(p, reason=RejectReason.REPLAYED)
        out.append(p)
    return out


def observe(settings: Settings, planned: list[Planned], *, letters: bool = True,
            inferred: bool = True, universe: list[Planned] | None = None) -> Outcome:
    """Compare the database, the dead-letter topic and the audit log with the plan.

    ``planned`` are the messages whose fate is checked; ``universe`` (default: the same)
    is everything sent, so a row or letter of another message is not taken for an extra
    one. ``letters=False`` skips reading the dead-letter topic (cheap progress polls);
    audit ``event.rejected`` records still show every rejection.
    """
    url = settings.database_url
    rows = set(_stored_rows(url))
    stored_at = dict(rows)
    planned = resolve_replays(planned, stored_at)
    universe = planned if universe is None else resolve_replays(universe, stored_at)
    out = Outcome(sent=len(planned))
    good = {(p.event_id, p.position) for p in planned if p.reason is None}
    bad = {(*p.position, p.sha256): p for p in planned if p.reason is not None}
    out.expected_stored, out.expected_rejected = len(good), len(bad)

    known = {(p.event_id, p.position) for p in universe if p.reason is None}
    out.stored = len(good & rows)
    out.missing_stored = sorted(pos for _, pos in good - rows)
    out.unexpected_rows = sorted(rows - known)

    audit = _audit_counts(url)
    wanted = [(a, pos, eid) for eid, pos in good
              for a in (AuditAction.EVENT_ACCEPTED, AuditAction.EVENT_STORED)]
    if inferred:
        wanted += [(AuditAction.EVENT_INFERRED, pos, eid) for eid, pos in good]
    wanted += [(AuditAction.EVENT_REJECTED, key[:3], None) for key in bad]
    out.audit_missing = [(w[0], w[1]) for w in wanted if audit.get(w, 0) == 0]
    out.audit_duplicates = [(a, pos, n) for (a, pos, _), n in audit.items() if n > 1]

    if letters:
        raw = _letters(settings)
        by_key: dict[LetterKey, str] = {}
        for key, reason in raw:
            by_key.setdefault(key, reason)
        mine = [key for key, _ in raw if key in bad]
        out.raw_letters = len(mine)
        out.raw_letter_duplicates = len(mine) - len(set(mine))
        known_bad = {(*p.position, p.sha256) for p in universe if p.reason is not None}
        out.dead_lettered = len(set(by_key) & set(bad))
        out.missing_letters = sorted(k[:3] for k in set(bad) - set(by_key))
        out.unexpected_letters = sorted(set(by_key) - known_bad)
        out.wrong_reasons = [
            (key[:3], p.reason, by_key[key]) for key, p in bad.items()
            if key in by_key and p.reason not in (ANY_REASON, by_key[key])
        ]
    return out


def child_env(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment that gives a child process (a worker, a CLI call) these settings."""
    env = dict(os.environ)
    for name in Settings.model_fields:
        value = getattr(settings, name)
        key = f"ATTEST_{name.upper()}"
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value).lower() if isinstance(value, bool) else str(value)
    env.update(extra or {})
    return env


def audit_verify(settings: Settings) -> subprocess.CompletedProcess[str]:
    """``attest audit verify`` as an operator runs it, against this run's database.

    The run's workers sign checkpoints with the state folder's service key; one machine
    is writer and auditor here, so that key is the one trusted (``--key``, public part only).
    """
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "audit", "verify", "--key", str(settings.service_key_path)],
        env=child_env(settings), capture_output=True, text=True, timeout=120, check=False,
    )


def send_planned(settings: Settings, planned: list[Planned]) -> list[Planned]:
    """Send in order with the idempotent producer; record where each message landed."""
    by_topic: dict[str, list[Planned]] = {}
    for p in planned:
        by_topic.setdefault(p.topic, []).append(p)
    for topic, items in by_topic.items():
        for d in deliver(settings, topic, [OutgoingMessage(p.key, p.value) for p in items]):
            items[d.index].partition, items[d.index].offset = d.partition, d.offset
    return planned
