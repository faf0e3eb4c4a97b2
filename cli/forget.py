"""``attest forget``: crypto-shred a data subject by destroying its data keys."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import typer

from cli.keys import operator
from cli.output import console, fail
from config.settings import get_settings, secret_environ
from protection.fields import subject_reference
from protection.keyring_sources import open_index_keyring
from protection.tiers import protection_catalog
from schemas.audit import AuditAction, AuditRecord, audit_id_for
from storage.key_maintenance import ForgetOutcome, forget_subject
from streams.audit_publisher import publish_audit
from streams.errors import BrokerUnavailable


def forget(
    subject: str = typer.Option(..., "--subject", help="The subject's identifier: a national id, "
                                "an account number or IBAN, a request id (any spacing)."),
    reason: str = typer.Option(..., "--reason", help="Why (recorded in the audit trail)."),
    domain: list[str] = typer.Option(
        None, "--domain", help="Only this identifier domain (national_id, account, request); "
                               "default: every subject domain."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Destroy every data key of a subject (crypto-shredding). Irreversible.

    Every protected field of the subject's records becomes unreadable for good (public fields
    stay); reads then say the subject was forgotten. The subject's blind indexes are cleared
    too, so the records no longer join on it. Audited before it commits: if the audit record
    cannot be sent, nothing is destroyed. The identifier itself is never recorded.
    """
    settings = get_settings()
    if not reason.strip():
        fail("--reason must say why the subject is forgotten")
    catalog = protection_catalog()
    subject_domains = sorted({s.subject_domain for s in catalog.schemas.values()})
    domains = sorted(set(domain)) if domain else subject_domains
    unknown = set(domains) - set(subject_domains)
    if unknown:
        fail(f"unknown subject domain {sorted(unknown)[0]!r} (known: {', '.join(subject_domains)})")
    keyring = open_index_keyring(settings.state_dir, secret_environ())  # index keys only
    try:
        refs = {d: subject_reference(keyring, d, subject) for d in domains}
    except ValueError as exc:
        fail(str(exc))
    if not yes:
        typer.confirm(f"Destroy every data key of this subject ({', '.join(domains)})? "
                      "This cannot be undone", abort=True)
    forget_id = str(uuid.uuid4())

    def audit(outcome: ForgetOutcome) -> None:
        publish_audit(settings, [AuditRecord(
            audit_id=audit_id_for(AuditAction.SUBJECT_FORGOTTEN, forget_id,
                                  datetime.now(UTC).isoformat()),
            actor=operator(), action=AuditAction.SUBJECT_FORGOTTEN, correlation_id=forget_id,
            subject_ids=list(outcome.event_ids),
            detail={"reason": reason, "domains": domains, "data_keys_destroyed": outcome.data_keys,
                    "tiers": list(outcome.tiers), "records": len(outcome.event_ids)},
        )])

    try:
        outcome = forget_subject(settings.database_url, refs, catalog, before_commit=audit)
    except BrokerUnavailable as exc:
        fail(f"nothing was destroyed: the audit record could not be sent ({exc})")
    if not outcome.data_keys:
        console.print("no data key of this subject was found (unknown, or already forgotten)")
        return
    console.print(f"forgotten: destroyed {outcome.data_keys} data keys "
                  f"({', '.join(outcome.tiers)}) protecting {len(outcome.event_ids)} indexed records "
                  f"(audit {forget_id})")
