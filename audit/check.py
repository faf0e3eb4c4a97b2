"""``attest audit verify`` end to end: trust anchor, the topic's witness, the stored chain.

1. The trusted public keys (audit.trust): ``--key``, ``ATTEST_AUDIT_PUBLIC_KEY`` or the
   pinned key; none is an error, never a fallback to the writer's private key file.
2. The newest checkpoint published on the audit topic (audit.published), read *before* the
   database snapshot: the sink commits a checkpoint before publishing it, so every
   checkpoint on the topic is already in the snapshot unless rows were deleted.
3. The stored chain and every stored checkpoint, then the topic's checkpoint against it.

The answer is a ``VerifyReport``: the lines to print and the exit code (docs/audit.md).
A chain that holds but could not be compared with the topic is *not* reported as intact.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from audit.errors import VerifyExit
from audit.log import tables_checked, verify_stored_chain
from audit.published import TopicCheckpoints, newest_published_checkpoint
from audit.trust import TrustedKeys, trusted_keys
from audit.verify import StoredCheckpoint, Verdict
from config.settings import Settings
from operations.errors import UnknownTopic
from streams.errors import BrokerUnavailable


@dataclass(frozen=True)
class VerifyReport:
    exit_code: int
    lines: list[str] = field(default_factory=list)  # for stdout, in order


def _witness(published: TopicCheckpoints) -> StoredCheckpoint | None:
    cp = published.newest
    return None if cp is None else StoredCheckpoint(cp.count, cp.head_hash, cp.text)


def verify_log(settings: Settings, key_files: Sequence[Path] = (),
               topic_timeout_s: float = 10.0, publish_wait_s: float = 10.0) -> VerifyReport:
    """Verify the stored log against the trusted keys and the audit topic's newest checkpoint.

    ``publish_wait_s``: how long to keep re-reading the topic (only the topic) when the
    database holds a checkpoint and the topic none. The sink commits a checkpoint and then publishes it, so
    for a moment after the first checkpoint that is the normal state, not a missing witness;
    a verify run in that moment said NOT VERIFIED (seen in the fault suite). The wait trusts
    nothing the database says (its ``created_at`` is the database's to forge): it only gives
    the topic time to catch up.

    Raises ``AuditCheckError`` subclasses (no trusted key, an unusable key, missing tables).
    """
    trust = trusted_keys(settings, key_files)
    deadline = time.monotonic() + publish_wait_s
    report, awaiting = _verify_once(settings, trust, topic_timeout_s)
    # Only the topic is polled while waiting; the chain is verified again (once) when a
    # checkpoint has appeared, so a lasting exit 3 costs one chain scan, not one per poll.
    while awaiting and time.monotonic() < deadline:
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        try:
            appeared = newest_published_checkpoint(settings, topic_timeout_s).newest is not None
        except (BrokerUnavailable, UnknownTopic):
            break
        if appeared:
            return _verify_once(settings, trust, topic_timeout_s)[0]
    return report


def _verify_once(settings: Settings, trust: TrustedKeys, topic_timeout_s: float
                 ) -> tuple[VerifyReport, bool]:
    """One verification; ``True`` beside it when only the topic's first checkpoint is missing."""
    published: TopicCheckpoints | None = None
    unread: tuple[int, str] | None = None
    try:
        published = newest_published_checkpoint(settings, topic_timeout_s)
    except BrokerUnavailable as exc:
        unread = (VerifyExit.BROKER_UNREACHABLE, f"the audit topic could not be read: {exc}")
    except UnknownTopic as exc:
        unread = (VerifyExit.NO_TOPIC_CHECKPOINT, f"the audit topic could not be read: {exc}")
    witness = _witness(published) if published is not None else None
    with tables_checked():
        verdict = verify_stored_chain(settings.database_url, list(trust.verifiers),
                                      witness=witness)
    anchor = f"(checkpoint signatures checked against {trust.names}, from {trust.source})"
    if verdict.problem is not None:
        return VerifyReport(VerifyExit.TAMPERED, [
            f"TAMPERED: {verdict.problem.message}",
            f"(verified before it: {verdict.records} records, {verdict.checkpoints} checkpoints)",
            anchor,
        ]), False
    if published is not None and published.malformed:
        return VerifyReport(VerifyExit.TAMPERED, [
            f"TAMPERED: the audit topic {published.topic} holds a malformed checkpoint record "
            f"at {published.malformed[0]}",
            f"(the stored chain holds: {verdict.records} records, {verdict.checkpoints} "
            "checkpoints verified)", anchor,
        ]), False
    awaiting = unread is None and published is not None and witness is None and verdict.checkpoints > 0
    if awaiting:
        assert published is not None
        unread = (VerifyExit.NO_TOPIC_CHECKPOINT,
                  f"the audit topic {published.topic} holds no checkpoint, although the "
                  f"database has {verdict.checkpoints} (retention? another topic prefix?)")
    if unread is not None:
        code, why = unread
        return VerifyReport(code, [
            f"NOT VERIFIED: the stored chain holds ({verdict.records} records, "
            f"{verdict.checkpoints} checkpoints verified), but {why}; rows deleted after the "
            f"last stored checkpoint (seq={verdict.last_checkpoint_seq}) would go unnoticed",
            anchor,
        ]), awaiting
    return VerifyReport(VerifyExit.INTACT, _intact_lines(verdict, witness, anchor)), False


def _intact_lines(verdict: Verdict, witness: StoredCheckpoint | None, anchor: str) -> list[str]:
    lines = [f"intact: {verdict.records} records, {verdict.checkpoints} checkpoints verified"]
    tail = verdict.records - verdict.last_checkpoint_seq
    if tail:
        lines.append(f"({tail} records after the last checkpoint are chained but not yet signed)")
    if witness is not None:
        lines.append(f"(the audit topic's newest checkpoint, seq={witness.last_seq}, "
                     "matches the log)")
    else:
        lines.append("(no checkpoint yet, in the database or on the audit topic)")
    lines.append(anchor)
    return lines
