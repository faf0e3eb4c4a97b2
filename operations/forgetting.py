"""``attest forget``: crypto-shred a data subject by destroying its data keys.

The identifier is turned into blind-index references here (index keys only: this needs no
tier private key), the operator confirms, and ``storage.key_maintenance`` destroys the keys
in one transaction whose last step sends the audit record: if that record cannot be sent,
nothing is destroyed. The identifier itself is never recorded.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from sqlalchemy import Connection

from config.settings import Settings, secret_environ
from operations.errors import ActionRefused
from operations.operator_audit import operator_record
from protection.errors import KeyNotHeld
from protection.fields import subject_reference
from protection.keyring import StaticKeyring
from protection.keyring_sources import open_index_keyring
from protection.tiers import protection_catalog
from reconcile.forgetting import drop_subject
from reconcile.sealing import StateKey
from schemas.audit import AuditAction
from storage.key_maintenance import ForgetOutcome, forget_subject
from storage.reconciliation import clear_sealed_values, rewrite_states
from streams.audit_publisher import publish_audit
from streams.errors import BrokerUnavailable

log = logging.getLogger("attest.forget")


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
             "inferences_deleted": outcome.inferences,
             "recon_pending_removed": outcome.recon_pending},
            # No event ids: the append-only log would keep, for ever, the list of every
            # event of the person it was asked to forget.
            subject_ids=[])])

    try:
        outcome = forget_subject(settings.database_url, refs, catalog, before_commit=audit,
                                 pending_state=pending_state_filter(keyring, refs))
    except BrokerUnavailable as exc:
        raise ActionRefused(f"nothing was destroyed: the audit record could not be sent ({exc})") from None
    return Forgotten(outcome, forget_id)


def pending_state_filter(keyring: StaticKeyring,
                         refs: dict[str, bytes]) -> Callable[[Connection, Sequence[str]], int]:
    """The ``pending_state`` step of ``forget_subject``: remove the subject from ``recon_state``.

    Each stored state is opened as its worker opens it (the key derived from the ``account``
    blind-index key for the finance stage, from the ``national_id`` one for the government
    stage; the associated data ``recon_state|<name>``), the subject's entries are removed
    (finance: records of its account index; government: documents of its national-id index),
    and the state is resealed with a fresh nonce, under the row lock ``rewrite_states`` takes,
    in forget's transaction. The sealed amounts of the finance breaks and matches of the
    subject's stored records (``event_ids``) are cleared in the same step. A state that
    neither key opens is left as it is and logged: it was sealed under index keys this keyring
    no longer holds, and no worker can open it either.
    """
    keys: list[StateKey] = []
    for domain in ("account", "national_id"):
        try:
            keys.append(StateKey.derive(keyring.blind_index_key(domain).material))
        except KeyNotHeld:
            continue
    account = refs["account"].hex() if "account" in refs else None
    person = refs["national_id"].hex() if "national_id" in refs else None

    def step(conn: Connection, event_ids: Sequence[str]) -> int:
        removed = 0

        def rewrite(name: str, sealed: bytes) -> bytes | None:
            nonlocal removed
            context = f"recon_state|{name}".encode()
            for key in keys:
                try:
                    plain = key.open(sealed, context)
                except (InvalidTag, ValueError):
                    continue
                state = json.loads(plain)
                removed += drop_subject(state, account, person, event_ids)
                if state == json.loads(plain):
                    return None  # nothing of the subject: the worker's state stays as it is
                return key.seal(json.dumps(state).encode(), context)
            log.warning("reconciliation state %r cannot be opened with this keyring's index keys; "
                        "left as it is", name)
            return None

        rewrite_states(conn, rewrite)
        # Matched or broken records of the subject: their sealed amounts go too.
        cleared = clear_sealed_values(conn, event_ids)
        if cleared:
            log.info("cleared the sealed amounts of %d reconciliation rows", cleared)
        return removed

    return step
