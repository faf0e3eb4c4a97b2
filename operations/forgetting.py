"""``attest forget``: crypto-shred a data subject by destroying its data keys.

The identifier is turned into blind-index references here (index keys only: this needs no
tier private key), the operator confirms, and ``storage.key_maintenance`` destroys the keys
in one transaction whose last step sends the audit record: if that record cannot be sent,
nothing is destroyed. The identifier itself is never recorded.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from config.settings import Settings, secret_environ
from operations.errors import ActionRefused
from operations.operator_audit import operator_record
from protection.fields import subject_reference
from protection.keyring_sources import open_index_keyring
from protection.tiers import protection_catalog
from schemas.audit import AuditAction
from storage.key_maintenance import ForgetOutcome, forget_subject
from streams.audit_publisher import publish_audit
from streams.errors import BrokerUnavailable


@dataclass(frozen=True, slots=True)
class Forgotten:
    """What was destroyed (``outcome``) under which audit correlation id (``forget_id``)."""

    outcome: ForgetOutcome
    forget_id: str


def shred_subject(
    settings: Settings, subject: str, reason: str, domains: Sequence[str] | None, actor: str,
    confirm: Callable[[list[str]], None],
) -> Forgotten:
    """Destroy every data key of ``subject`` in ``domains`` (default: every subject domain).

    ``confirm(domains)`` runs after the arguments are checked and before anything changes;
    it raises to stop (the CLI asks the operator there). Raises ``ActionRefused`` for an
    empty reason, an unknown domain, an identifier the domain cannot read, or an audit record
    that cannot be sent (then nothing is destroyed).
    """
    if not reason.strip():
        raise ActionRefused("--reason must say why the subject is forgotten")
    catalog = protection_catalog()
    subject_domains = sorted({s.subject_domain for s in catalog.schemas.values()})
    chosen = sorted(set(domains)) if domains else subject_domains
    unknown = set(chosen) - set(subject_domains)
    if unknown:
        raise ActionRefused(f"unknown subject domain {sorted(unknown)[0]!r} "
                            f"(known: {', '.join(subject_domains)})")
    keyring = open_index_keyring(settings.state_dir, secret_environ())  # index keys only
    try:
        refs = {d: subject_reference(keyring, d, subject) for d in chosen}
    except ValueError as exc:
        raise ActionRefused(str(exc)) from None
    confirm(chosen)
    forget_id = str(uuid.uuid4())

    def audit(outcome: ForgetOutcome) -> None:
        publish_audit(settings, [operator_record(
            AuditAction.SUBJECT_FORGOTTEN, forget_id, actor,
            {"reason": reason, "domains": chosen, "data_keys_destroyed": outcome.data_keys,
             "tiers": list(outcome.tiers), "records": len(outcome.event_ids),
             "inferences_deleted": outcome.inferences},
            # No event ids: the append-only log would keep, for ever, the list of every
            # event of the person it was asked to forget.
            subject_ids=[])])

    try:
        outcome = forget_subject(settings.database_url, refs, catalog, before_commit=audit)
    except BrokerUnavailable as exc:
        raise ActionRefused(f"nothing was destroyed: the audit record could not be sent ({exc})") from None
    return Forgotten(outcome, forget_id)
