"""``attest query``: read what a role may read, with a stated purpose; mask the rest; audit it.

Every read goes through the same steps (``run_query``):

1. refuse a read without a purpose, or for a role the policy does not know;
2. load only the private keys of the tiers the role may read (cryptography, first line);
3. ``decide_access`` for every field, with the approvals recorded for ``--request`` (policy
   code, second line); only allowed columns are fetched;
4. fetch as the department's Postgres role: column grants and row-level security (third line);
5. publish the audit record (who, role, purpose, fields, record ids) and only then decrypt;
   if the record cannot be sent, nothing is decrypted or shown.
"""

from __future__ import annotations

import getpass
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import typer

from cli.keys import operator
from cli.output import console, fail
from config.settings import Settings, get_settings, secret_environ
from schemas.audit import AuditRecord, audit_id_for
from security.field_protection import FieldReader, subject_reference
from security.keyring import Keyring, open_keyring
from security.policy import AccessDecision, AccessPolicy, decide_fields, load_policy
from security.protection_errors import AccessRefused, FieldProtectionError
from storage.protected import RowFilter, find_approvals, read_protected
from streams.audit_publisher import publish_audit
from streams.errors import BrokerUnavailable

FieldState = Literal["public", "clear", "masked", "forgotten", "absent"]
MASK = "••••••"


@dataclass(frozen=True)
class QueryRequest:
    """What a reader asks for. ``reader`` is the person; ``actor`` is how the audit names them."""

    role: str
    purpose: str
    reader: str
    actor: str
    subject: str | None = None
    event_id: str | None = None
    typ: str | None = None
    source: str | None = None
    request_id: str | None = None
    limit: int = 20


@dataclass(frozen=True)
class FieldView:
    """One field of one record as shown: its value, or why it is masked or gone."""

    name: str
    tier: str
    state: FieldState
    value: Any = None
    note: str | None = None


@dataclass(frozen=True)
class RecordView:
    event_id: str
    typ: str
    source: str
    issued_at: datetime
    department: str
    fields: list[FieldView]


@dataclass(frozen=True)
class QueryResult:
    records: list[RecordView]
    audit: AuditRecord
    decisions: dict[str, dict[str, AccessDecision]] = field(repr=False)


def run_query(
    settings: Settings,
    request: QueryRequest,
    policy: AccessPolicy,
    keyring_for: Callable[[frozenset[Any]], Keyring],
    publish: Callable[[list[AuditRecord]], None],
    now: datetime | None = None,
) -> QueryResult:
    """Decide, fetch, audit, then decrypt. Raises ``AccessRefused`` before anything is shown."""
    if not request.purpose or not request.purpose.strip():
        raise AccessRefused("a read needs a stated purpose: --purpose 'why you read this'")
    role = policy.role(request.role)  # PolicyError for an unknown role
    department = policy.department_of(role)
    now = now or datetime.now(UTC)
    keyring = keyring_for(role.tiers)
    catalog = policy.catalog
    readable_schemas = sorted({typ for typ, _ in role.fields})
    if request.typ is not None:
        if request.typ not in readable_schemas:
            raise AccessRefused(f"role {role.name!r} reads no protected field of {request.typ}")
        readable_schemas = [request.typ]
    approvals = find_approvals(settings.database_url, request.request_id) if request.request_id else []

    fetched = []
    decisions: dict[str, dict[str, AccessDecision]] = {}
    for typ in readable_schemas:
        schema = catalog.schema(typ)
        decided = decide_fields(policy, role.name, schema.fields.values(), approvals,
                                reader=request.reader, now=now)
        decisions[typ] = decided
        columns = [name for name, d in decided.items() if d.allowed and d.protected]
        index = None
        if request.subject is not None:
            if schema.field(schema.subject_field).index_column is None:
                continue
            index = subject_reference(keyring, schema.subject_domain, request.subject)
        where = RowFilter(event_id=request.event_id, subject_index=index, source=request.source,
                          limit=request.limit)
        rows, keys = read_protected(settings.database_url, db_role=department.db_role,
                                    schema=schema, columns=columns, where=where,
                                    key_ids_of=FieldReader.key_ids)
        fetched.append((schema, decided, rows, keys))

    revealed = sorted(f"{typ}.{name}" for typ, decided in decisions.items()
                      for name, d in decided.items() if d.allowed and d.protected)
    masked = sorted(f"{typ}.{name}:{d.reason.value}" for typ, decided in decisions.items()
                    for name, d in decided.items() if not d.allowed)
    record_ids = [row.event_id for _, _, rows, _ in fetched for row in rows]
    read_id = str(uuid.uuid4())
    audit = AuditRecord(
        audit_id=audit_id_for("fields.read", read_id), time=now, actor=request.actor,
        action="fields.read", correlation_id=read_id, subject_ids=record_ids,
        detail={
            "reader": request.reader, "role": role.name, "department": department.name,
            "purpose": request.purpose.strip(), "fields": revealed, "masked": masked,
            "records": len(record_ids), "request_id": request.request_id,
            "approvals": sorted({a for decided in decisions.values() for d in decided.values()
                                 for a in d.approval_ids}),
            "filters": {"subject": request.subject is not None, "event_id": request.event_id,
                        "typ": request.typ, "source": request.source},
            "policy": policy.name,
        },
    )
    try:
        publish([audit])
    except BrokerUnavailable as exc:
        raise AccessRefused(f"the read was refused: its audit record could not be sent ({exc})") \
            from None

    reader = FieldReader(keyring, catalog)
    records = []
    for schema, decided, rows, keys in fetched:
        allowed = {n: d for n, d in decided.items() if d.allowed and d.protected}
        for row in rows:
            opened = reader.open_fields(schema.typ, row.event_id, row.ciphertexts, allowed, keys)
            views = []
            for name, spec in schema.fields.items():
                decision = decided[name]
                if not spec.protected:
                    views.append(FieldView(name, spec.tier.label, "public" if name in row.public
                                           else "absent", row.public.get(name)))
                elif not decision.allowed:
                    views.append(FieldView(name, spec.tier.label, "masked",
                                           note=decision.reason.value))
                elif opened[name].forgotten:
                    views.append(FieldView(name, spec.tier.label, "forgotten",
                                           note=opened[name].forgotten))
                elif row.ciphertexts.get(name) is None:
                    views.append(FieldView(name, spec.tier.label, "absent"))
                else:
                    views.append(FieldView(name, spec.tier.label, "clear", opened[name].value))
            records.append(RecordView(row.event_id, row.typ, row.source, row.issued_at,
                                      row.department, views))
    return QueryResult(records, audit, decisions)


def _show(result: QueryResult, as_json: bool) -> None:
    if as_json:
        for record in result.records:
            print(json.dumps({
                "event_id": record.event_id, "typ": record.typ, "source": record.source,
                "issued_at": record.issued_at.isoformat(),
                "fields": {f.name: f.value for f in record.fields if f.state in ("public", "clear")},
                "masked": {f.name: f.note for f in record.fields if f.state == "masked"},
                "forgotten": [f.name for f in record.fields if f.state == "forgotten"],
            }, ensure_ascii=False, default=str))
        return
    for record in result.records:
        console.print(f"[bold]{record.typ}[/] {record.event_id}  {record.source}  "
                      f"{record.issued_at:%Y-%m-%d %H:%M:%S}")
        for f in record.fields:
            if f.state == "absent":
                continue
            if f.state in ("public", "clear"):
                shown = str(f.value)
            elif f.state == "masked":
                shown = f"[dim]{MASK} masked ({f.note})[/]"
            else:
                shown = f"[yellow]forgotten[/]: {f.note}"
            console.print(f"  {f.name:<18} [dim]{f.tier:<12}[/] {shown}")
    console.print(f"[dim]{len(result.records)} records; audit {result.audit.correlation_id}[/]")


def query(
    role: str = typer.Option(..., "--as", help="The role you read as (from the policy file)."),
    purpose: str | None = typer.Option(None, "--purpose", help="Why you read: recorded with the "
                                       "read. Required; a read without a purpose is refused."),
    subject: str | None = typer.Option(None, "--subject", help="A subject identifier (national id, "
                                       "account or IBAN), matched by its blind index."),
    event_id: str | None = typer.Option(None, "--event-id", help="One event."),
    typ: str | None = typer.Option(None, "--typ", help="Only this schema, e.g. attest.document.v1."),
    source: str | None = typer.Option(None, "--source", help="Only events of this source."),
    request: str | None = typer.Option(None, "--request", help="The data-sharing request whose "
                                       "recorded approvals allow level-2 and level-3 fields."),
    policy: str = typer.Option("government", "--policy",
                               help="Policy file, or a bundled one: government, finance."),
    limit: int = typer.Option(20, "--limit", "-n", min=1, max=10_000, help="Most records."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per record."),
) -> None:
    """Read records as ROLE: fields the role may read are decrypted, the rest are masked.

    Example: `attest query --as tax-inspector --purpose "audit 2025 returns" --subject
    "1234 5678 9012" --request REQ-42`. Every read is an audit record (who, role, purpose,
    fields, records); without a reachable broker the read is refused.
    """
    settings = get_settings()
    reader = getpass.getuser()
    try:
        loaded = load_policy(policy)
        result = run_query(
            settings,
            QueryRequest(role=role, purpose=purpose or "", reader=reader, actor=operator(),
                         subject=subject, event_id=event_id, typ=typ, source=source,
                         request_id=request, limit=limit),
            loaded,
            keyring_for=lambda tiers: open_keyring(settings.state_dir, secret_environ(), readable=tiers),
            publish=lambda records: publish_audit(settings, records),
        )
    except FieldProtectionError as exc:
        fail(str(exc))
    _show(result, as_json)


def fields_of(records: Sequence[RecordView], state: FieldState) -> set[tuple[str, str]]:
    """(event_id, field) pairs in ``state`` (for tests and tools)."""
    return {(r.event_id, f.name) for r in records for f in r.fields if f.state == state}
