"""The audit sink: audit topic -> hash-chained, append-only ``audit_log`` (docs/audit.md).

Only signed messages are chained (issue 14, item 4): each must verify against a registered
audit signer whose actor patterns cover every record in it (``audit.signing``). Anything
else is dead-lettered with a reason and raises an ``audit.forged`` alarm, itself an audit
record (chained) and a Prometheus count; an audit_id that arrives again with other content
raises ``audit.conflict`` the same way.

Idempotent on audit_id: a redelivered record is stored once and does not disturb the chain.
After each batch the appender may sign a checkpoint (every ``audit_checkpoint_every``
records or ``audit_checkpoint_interval_s`` seconds); the sink then publishes it as an
``audit.checkpoint`` record, so witnesses outside the database get a copy. The sink reads
that record back from the audit topic and stores it like any other; checkpoint records do
not count towards the next checkpoint, so this cannot loop.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime

from pydantic import ValidationError

from agents.messages import BatchOutput, DeadLetter, IncomingMessage
from agents.retry import until_stored
from audit.chain import CHECKPOINT_ACTION
from audit.checkpoints import CheckpointSigner, load_or_create_service_key
from audit.errors import ForgedAudit, SinkKeyUnusable
from audit.log import AuditConflict, Checkpoint, CheckpointPolicy, append_chained, record_problem
from audit.signers import signer_snapshot
from audit.signing import AuditSigner, check_actors, may_speak_for, verify_audit_message
from config.settings import Settings
from schemas.audit import AuditAction, AuditRecord, audit_id_for, parse_records
from security.reasons import RejectReason

log = logging.getLogger("attest.audit_sink")

#: Actions the access service appends to the log itself, in the transaction that must commit
#: before it decrypts (docs/security.md): they never travel on the audit topic, so one found
#: there was written by someone with produce rights on the topic, not by the service.
SERVICE_ONLY_ACTIONS = frozenset({
    AuditAction.FIELDS_READ, AuditAction.ACCESS_REQUESTED, AuditAction.ACCESS_APPROVED,
    AuditAction.ACCESS_DENIED, AuditAction.APPROVER_KEY_REGISTERED,
    AuditAction.DLQ_PAYLOAD_SHOWN,  # POST /v1/dead-letters/payload records it itself
})


def topic_problem(record: AuditRecord) -> str | None:
    """Why a record read from the audit topic cannot be genuine and must not be chained, or None."""
    if record.action in SERVICE_ONLY_ACTIONS:
        return (f"{record.action} is written by the access service into the log directly, "
                "never through the audit topic")
    return record_problem(record)


def checkpoint_record(checkpoint: Checkpoint, actor: str) -> AuditRecord:
    """The audit record announcing a checkpoint; its id is derived from what it signs."""
    return AuditRecord(
        audit_id=audit_id_for(CHECKPOINT_ACTION, checkpoint.last_seq, checkpoint.head_hash),
        time=checkpoint.created_at,
        actor=actor,
        action=CHECKPOINT_ACTION,
        correlation_id=f"audit-checkpoint:{checkpoint.last_seq}",
        detail={
            "count": checkpoint.last_seq,
            "head_hash": checkpoint.head_hash,
            "key_id": checkpoint.key_id,
            "checkpoint": checkpoint.text,
        },
    )


def _summary(record: AuditRecord) -> dict[str, object]:
    """A few facts of a record, short: the arrived one may be anyone's words."""
    return {"action": record.action[:64], "actor": record.actor[:200],
            "correlation_id": (record.correlation_id or "")[:200], "time": record.time.isoformat(),
            "outcome": record.outcome}


def conflict_record(conflict: AuditConflict) -> AuditRecord:
    """The alarm for an audit_id that arrived again with other content (issue 14, item 4).

    The stored record stays (the chain is append-only); which one is genuine is for an
    auditor to decide, so both are described. Its id covers the arrived content: the same
    conflict delivered again is one alarm, a different one is another.
    """
    digest = hashlib.sha256(conflict.arrived.to_bytes()).hexdigest()
    return AuditRecord(
        audit_id=audit_id_for(AuditAction.AUDIT_CONFLICT, conflict.audit_id, digest),
        # Deterministic (no clock, no pid), so the alarm raised again on a redelivery, by
        # any sink, is the same record.
        time=conflict.arrived.time, actor=SINK_ACTOR, action=AuditAction.AUDIT_CONFLICT, outcome="error",
        reason="audit_id_conflict", correlation_id=conflict.audit_id,
        detail={"stored": _summary(conflict.stored), "arrived": _summary(conflict.arrived),
                "arrived_sha256": digest},
    )


#: The actor of the sink's alarms (``audit.conflict``, ``audit.forged``); the worker's key
#: may speak for it (``audit.signer_keys.DEFAULT_ACTORS``).
SINK_ACTOR = "audit-sink"


def forged_record(message: IncomingMessage, forged: ForgedAudit) -> AuditRecord:
    """The alarm for a message that is not a verified record of its signer.

    Says where it was, why it was refused, the kid its header named and a digest of its
    bytes, never anything from its payload (which may be anyone's words, or a real record's
    content replayed). Its id covers position and digest: a redelivery is the same alarm.
    """
    digest = hashlib.sha256(message.value).hexdigest()
    return AuditRecord(
        audit_id=audit_id_for(AuditAction.AUDIT_FORGED, message.position, digest),
        time=message.broker_time or message.received_at, actor=SINK_ACTOR,
        action=AuditAction.AUDIT_FORGED, outcome="rejected", reason=forged.problem,
        correlation_id=message.position, source_topic=message.topic[:200],
        source_partition=message.partition, source_offset=message.offset,
        detail={"kid": forged.kid, "sha256": digest, "bytes": len(message.value),
                "dead_letter_reason": str(forged.reject_reason)},
    )


class AuditSink:
    """Stores audit records from the audit topic; one instance per worker process."""

    def __init__(
        self, settings: Settings, actor: str | None = None,
        signer: CheckpointSigner | None = None,
        signers: Callable[[], dict[str, AuditSigner]] | None = None,
        own_kid: str | None = None,
    ) -> None:
        self._settings = settings
        self._actor = actor or f"worker:{socket.gethostname()}:{os.getpid()}"
        self._signer = signer
        # Read once per batch: a registration or revocation counts from the next batch.
        self._signers = signers or (lambda: signer_snapshot(settings.database_url))
        # The kid the wiring signs this sink's own records with (checkpoints, alarms).
        self._own_kid = own_kid

    def policy(self) -> CheckpointPolicy:
        """Checkpoint settings and the signer: the one given, else the service key file
        (created 0600 on first use). That file belongs to the account that writes the log;
        in production pass a signer backed by a KMS or a separate signer process instead, and
        let auditors pin its public key (docs/audit.md, "Where the signing key should live")."""
        if self._signer is None:
            key = load_or_create_service_key(self._settings.service_key_path)
            self._signer = CheckpointSigner(key)
        return CheckpointPolicy(
            self._settings.audit_checkpoint_every,
            self._settings.audit_checkpoint_interval_s,
            self._signer,
        )

    async def process(self, batch: list[IncomingMessage]) -> BatchOutput:
        """Store every storable record; anything else is dead-lettered, never dropped."""
        records: list[AuditRecord] = []
        output = BatchOutput()
        signers = await until_stored(self._signers, self._settings.db_retry_max_s,
                                     "loading audit signers")
        self._check_own_key(signers)
        for message in batch:
            try:
                verified = verify_audit_message(message.value, signers)
                found = parse_records(verified.payload)
                check_actors(found, verified.signer)
            except ForgedAudit as forged:
                log.warning("audit message %s refused (%s): %s", message.position, forged.problem,
                            forged.detail)
                self._reject(output, message, RejectReason(forged.reject_reason), forged.detail)
                output.audit.append(forged_record(message, forged))
                continue
            except ValidationError as exc:
                self._reject(output, message, RejectReason.MALFORMED,
                             f"not an attest.audit.v1 record or batch: {exc.error_count()} errors")
                continue
            problems = [(i, p) for i, r in enumerate(found) if (p := topic_problem(r)) is not None]
            if problems:
                # The message is the unit of a dead letter: it keeps its original bytes, so
                # its storable records are stored now and a retry stores nothing twice.
                index, problem = problems[0]
                detail = (f"audit record cannot be stored: {problem}" if len(found) == 1 else
                          f"{len(problems)} of {len(found)} audit records cannot be stored, "
                          f"first #{index}: {problem}")
                self._reject(output, message, RejectReason.SCHEMA_INVALID, detail)
            bad = {i for i, _ in problems}
            records.extend(r for i, r in enumerate(found) if i not in bad)
        url, policy = self._settings.database_url, self.policy()
        result = await until_stored(
            lambda: append_chained(url, records, policy), self._settings.db_retry_max_s,
            "appending audit records",
        )
        output.stored = result.stored
        for conflict in result.conflicts:
            log.warning("audit_id %s arrived again with other content (stored %s by %s, arrived "
                        "%s by %s): recorded as audit.conflict", conflict.audit_id,
                        conflict.stored.action, conflict.stored.actor[:80], conflict.arrived.action[:64],
                        conflict.arrived.actor[:80])
            output.audit.append(conflict_record(conflict))
        if result.checkpoint is not None:
            output.audit.append(checkpoint_record(result.checkpoint, self._actor))
        return output

    def _check_own_key(self, signers: dict[str, AuditSigner]) -> None:
        """Refuse to run while this sink's own key is not a registered, unrevoked signer.

        Its alarms would be refused when read back, each refusal raising a new alarm: a loop
        on the topic. Stopping instead loses nothing: the records wait on the topic until an
        operator registers the key (``attest audit signers add worker``) and the stage restarts.
        """
        if self._own_kid is None:
            return
        own = signers.get(self._own_kid)
        if own is None or own.revoked_at is not None:
            state = "is not registered" if own is None else "was revoked"
            raise SinkKeyUnusable(
                f"this worker's audit-signing key {self._own_kid} {state}: nothing it signs "
                "would be chained. Register it with `attest audit signers add worker` "
                f"(key file {self._settings.audit_signer_key_path('worker')}) and restart")
        if not may_speak_for(own.actors, SINK_ACTOR) or not may_speak_for(own.actors, self._actor):
            raise SinkKeyUnusable(
                f"this worker's audit-signing key {self._own_kid} may not speak for "
                f"{SINK_ACTOR!r} and {self._actor!r}: register it with those actors")

    @staticmethod
    def _reject(output: BatchOutput, message: IncomingMessage, reason: RejectReason,
                detail: str) -> None:
        output.dead_letters.append(DeadLetter(message, reason.value, detail, datetime.now(UTC)))
