"""The embedded stack's audit signers: made and registered without a manual step.

On one development machine the worker, the operator and whoever registers keys are one
person, so ``attest dev up``, ``attest db upgrade`` (against the embedded stack), ``attest
demo`` and the tests make this folder's worker and operator audit-signing keys (0600) and
register them, audited like ``attest audit signers add``. In production each component's
owner registers its own key (docs/audit.md, "Audit-signing keys").
"""

from __future__ import annotations

from collections.abc import Callable

from audit.errors import AuditTablesMissing
from audit.signers_admin import Registered, provision_local_signers
from config.settings import Settings
from devstack.stack import StackInfo, status
from streams.admin import ensure_topics

#: Who the audit log says registered the embedded stack's audit signers.
DEV_ACTOR = "operator:attest-dev"


def provision_embedded_signers(
    settings: Settings, notice: Callable[[str], None] = print, info: StackInfo | None = None,
) -> list[Registered]:
    """Register this folder's worker and operator keys with the running embedded stack.

    Does nothing (returns ``[]``) when no embedded stack runs for this state folder or when
    ``settings`` point at another database; says what to do when the schema is not there yet.
    """
    current = info or (status(settings).info if status(settings).running else None)
    if current is None:
        return []
    if settings.database_url not in (current.database_url, current.worker_database_url) and info is None:
        return []  # another server: its operators register their own signers
    target = settings.model_copy(update={"database_url": current.database_url,
                                         "kafka_bootstrap": current.kafka_bootstrap})
    try:
        ensure_topics(target)  # the registrations' records go to the audit topic
        done = provision_local_signers(target, DEV_ACTOR)
    except AuditTablesMissing:
        notice("audit signers not registered yet (no schema): `attest db upgrade` registers "
               "this folder's worker and operator audit keys")
        return []
    for item in done:
        if item.added:
            notice(f"audit signer {item.signer.kid} registered for {', '.join(item.signer.actors)}")
    return done
