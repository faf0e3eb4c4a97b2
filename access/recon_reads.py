"""Government discrepancies read through the access service, per department.

The consistency stage (agents/reconciliation.py) stores each cross-agency discrepancy in
``recon_breaks``: the rule that fired (``reason``), the documents' event ids, no field value.
A department sees a discrepancy when the loaded policies let one of its roles read at least
one of the fields the rule compares: the same ``visible_to`` the stage computed and audited
(``reconcile.government``), so what is served agrees with the ``recon.inconsistent`` record.
The caller's own acting role must be one of those roles.

A caller needs a reading role in its token's department (``AccessService.role_of``); the
read is a ``fields.read`` audit record (kind ``recon.breaks``) committed before anything is
returned, and a refusal is recorded too.
"""

from __future__ import annotations

import contextlib
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from access.errors import AccessError, AuditUnavailable
from access.identity import Identity
from access.service import AccessService
from reconcile.government import GOVERNMENT_PAIRING, rule_fields, rule_named, visible_to
from schemas.audit import AuditAction
from schemas.catalog import DOCUMENT_V1
from storage.reconciliation import list_discrepancies

KIND = "recon.breaks"


@dataclass(frozen=True, slots=True)
class Discrepancy:
    break_id: str
    rule: str
    event_ids: tuple[str, ...]
    agency: str
    opened_at: datetime | None
    visible_to: tuple[str, ...]


def department_fields(service: AccessService) -> dict[str, frozenset[str]]:
    """department -> document fields some role of it may read, over every loaded policy."""
    out: dict[str, set[str]] = defaultdict(set)
    for policy in service._policies:  # the service's own loaded policies (same package)
        for role in policy.roles.values():
            out[role.department].update(f for (typ, f) in role.fields if typ == DOCUMENT_V1)
    return {d: frozenset(f) for d, f in out.items()}


def read_discrepancies(service: AccessService, identity: Identity, purpose: str,
                       role: str | None = None, limit: int = 100) -> tuple[str, str, list[Discrepancy]]:
    """The discrepancies ``identity``'s department may see, newest last; audited first.

    Returns (read id, role name, discrepancies). Raises ``Forbidden`` for a token with no
    reading role in its department, ``AccessError`` without a purpose, ``AuditUnavailable``
    when the read's record cannot be committed (nothing is returned then).
    """
    try:
        if not purpose or not purpose.strip():
            raise AccessError("a read needs a stated purpose")
        _, acting = service.role_of(identity, role)
    except AccessError as refusal:
        _audit_refusal(service, identity, role, purpose, refusal)
        raise
    readable = department_fields(service)
    mine = frozenset(f for (typ, f) in acting.fields if typ == DOCUMENT_V1)
    shown: list[Discrepancy] = []
    for row in list_discrepancies(service._url, GOVERNMENT_PAIRING):
        fields = rule_fields(row.reason)
        departments = visible_to(fields, readable)
        # The acting role itself must read one of the rule's fields (so its department is
        # one of ``departments``); another role of the same department does not lend it.
        if not mine & fields or identity.department not in departments:
            continue
        shown.append(Discrepancy(row.break_id, rule_named(row.reason), (row.record_id, *row.related_ids),
                                 row.source, row.opened_at, departments))
    shown = shown[-limit:]
    read_id = str(uuid.uuid4())
    rules: dict[str, int] = defaultdict(int)
    for d in shown:
        rules[d.rule] += 1
    service._audit(service._record(identity, AuditAction.FIELDS_READ, read_id, [d.break_id for d in shown], {
        "kind": KIND, "reader": identity.subject, "role": acting.name,
        "department": identity.department, "purpose": purpose.strip(), "rules": dict(rules),
    }))  # committed, or AuditUnavailable: nothing is returned
    return read_id, acting.name, shown


def as_json(d: Discrepancy) -> dict[str, Any]:
    return {"break_id": d.break_id, "rule": d.rule, "event_ids": list(d.event_ids), "agency": d.agency,
            "opened_at": d.opened_at.isoformat() if d.opened_at else None, "visible_to": list(d.visible_to)}


def _audit_refusal(service: AccessService, identity: Identity, role: str | None, purpose: str,
                   refusal: AccessError) -> None:
    """Best effort, as for refused reads: the refusal stands whether or not it is recorded."""
    record = service._record(identity, AuditAction.FIELDS_READ, str(uuid.uuid4()), [], {
        "kind": KIND, "reader": identity.subject, "role": role, "department": identity.department,
        "purpose": (purpose or "").strip(), "refused": str(refusal)})
    record = record.model_copy(update={"outcome": "rejected", "reason": type(refusal).__name__.lower()})
    with contextlib.suppress(AuditUnavailable):
        service._audit(record)
