"""Access policy: roles, departments, which fields each role reads, and the approval each needs.

A policy is a YAML file (``policies/government.yaml``, ``policies/finance.yaml``). The one
decision function, ``decide_access``, is pure: policy, role, field, the approvals recorded for
the request, who is reading and when. The CLI calls it for every field of every read, and
only fields it allows are fetched, decrypted and shown.

Approval levels:

1. the role alone;
2. the role and a recorded approval of the request (an ``attest.approval.v1`` event that
   approves at level 2 or higher);
3. the role and a recorded level-3 approval by a second person: the approver is not the reader.

Only approvals signed by the policy's approval sources count, only while they are younger than
``valid_for_days``, and one recorded denial of the request vetoes every approval of it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from protection.errors import PolicyError, TierCatalogError
from protection.tiers import FieldSpec, ProtectionCatalog, Tier, protection_catalog

#: Policies shipped with Attest, by name (``--policy government``).
POLICIES_DIR = Path(__file__).resolve().parent.parent / "policies"
BUNDLED_POLICIES = ("government", "finance")
_DB_ROLE = re.compile(r"^attest_[a-z0-9_]{1,56}$")
LEVELS = (1, 2, 3)

#: Showing a dead letter's payload (``POST /v1/dead-letters/payload``): a letter's bytes may hold
#: any department's protected fields in clear, so it is a permission of its own, not a field read.
DEAD_LETTER_PAYLOAD = "dead_letters.payload"
#: Every permission a policy may grant (its ``permissions`` section); anything else is a typo
#: that would grant nothing, and is refused at load.
PERMISSIONS = frozenset({DEAD_LETTER_PAYLOAD})


class AccessReason(StrEnum):
    """Why a field is readable or masked (stable codes, recorded in the audit trail)."""

    PUBLIC = "public"
    GRANTED = "granted"
    APPROVED = "approved"
    UNKNOWN_ROLE = "unknown_role"
    NOT_GRANTED = "not_granted"
    TIER_NOT_HELD = "tier_not_held"
    APPROVAL_MISSING = "approval_missing"
    SECOND_PERSON_REQUIRED = "second_person_required"
    DENIED = "denied"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Department:
    """A department: its Postgres role and the row owners (agencies, sources) it may see."""

    name: str
    db_role: str
    rows: frozenset[str]


@dataclass(frozen=True, slots=True)
class Role:
    """A role: its department, the tiers whose keys it holds, its fields and their levels."""

    name: str
    department: str
    tiers: frozenset[Tier]
    fields: Mapping[tuple[str, str], int]  # (typ, field) -> approval level

    def level_for(self, spec: FieldSpec) -> int | None:
        return self.fields.get((spec.schema, spec.name))


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    name: str
    roles: Mapping[str, Role]
    departments: Mapping[str, Department]
    approval_sources: frozenset[str]
    approval_valid_for: timedelta
    catalog: ProtectionCatalog = field(repr=False)
    #: roles whose holders may approve or deny this policy's access requests
    approver_roles: frozenset[str] = frozenset()
    #: permission (``PERMISSIONS``) -> the token roles whose holders have it, whatever their
    #: department (like approver roles: these are duties, not field reads)
    permissions: Mapping[str, frozenset[str]] = field(default_factory=lambda: MappingProxyType({}))

    def roles_with(self, permission: str) -> frozenset[str]:
        """The token roles this policy gives ``permission`` (empty: nobody)."""
        return self.permissions.get(permission, frozenset())

    def role(self, name: str) -> Role:
        try:
            return self.roles[name]
        except KeyError:
            raise PolicyError(
                f"policy {self.name!r} has no role {name!r} (roles: {', '.join(sorted(self.roles))})"
            ) from None

    def department_of(self, role: Role) -> Department:
        return self.departments[role.department]

    def granted_columns(self, department: str, typ: str) -> frozenset[str]:
        """Protected fields of ``typ`` that any role of ``department`` may read."""
        return frozenset(
            name for r in self.roles.values() if r.department == department
            for (schema, name) in r.fields if schema == typ
        )


@dataclass(frozen=True, slots=True)
class Approval:
    """A recorded ``attest.approval.v1`` event, as its public fields say."""

    event_id: str
    request_id: str
    source: str
    approver: str
    level: int
    decision: str
    issued_at: datetime


@dataclass(frozen=True, slots=True)
class AccessDecision:
    """The answer for one field: readable or masked, why, and the approvals relied on."""

    field: FieldSpec
    role: str
    allowed: bool
    reason: AccessReason
    level: int = 0
    approval_ids: tuple[str, ...] = ()

    @property
    def protected(self) -> bool:
        return self.field.protected


def _same_person(approver: str, reader: str) -> bool:
    """An approver and a reader are the same person if their names (or local parts) match."""
    a, r = approver.strip().casefold(), reader.strip().casefold()
    return a == r or a.split("@", 1)[0] == r.split("@", 1)[0]


def _usable(policy: AccessPolicy, approvals: Iterable[Approval], now: datetime) -> list[Approval]:
    return [
        a for a in approvals
        if a.source in policy.approval_sources
        and now - policy.approval_valid_for <= a.issued_at <= now + timedelta(minutes=5)
    ]


def decide_access(
    policy: AccessPolicy,
    role: str,
    field: FieldSpec,
    approvals: Sequence[Approval],
    *,
    reader: str,
    now: datetime,
) -> AccessDecision:
    """May ``reader``, acting as ``role``, read ``field`` given the request's ``approvals``?"""
    if not field.protected:
        return AccessDecision(field, role, True, AccessReason.PUBLIC)
    granted = policy.roles.get(role)
    if granted is None:
        return AccessDecision(field, role, False, AccessReason.UNKNOWN_ROLE)
    level = granted.level_for(field)
    if level is None:
        return AccessDecision(field, role, False, AccessReason.NOT_GRANTED)
    if field.tier not in granted.tiers:
        return AccessDecision(field, role, False, AccessReason.TIER_NOT_HELD, level)
    if level == 1:
        return AccessDecision(field, role, True, AccessReason.GRANTED, level)
    usable = _usable(policy, approvals, now)
    denials = [a for a in usable if a.decision == "deny"]
    if denials:
        return AccessDecision(field, role, False, AccessReason.DENIED, level,
                              tuple(a.event_id for a in denials))
    enough = [a for a in usable if a.decision == "approve" and a.level >= level]
    if not enough:
        return AccessDecision(field, role, False, AccessReason.APPROVAL_MISSING, level)
    if level >= 3:
        enough = [a for a in enough if not _same_person(a.approver, reader)]
        if not enough:
            return AccessDecision(field, role, False, AccessReason.SECOND_PERSON_REQUIRED, level)
    return AccessDecision(field, role, True, AccessReason.APPROVED, level,
                          tuple(sorted(a.event_id for a in enough)))


def decide_fields(
    policy: AccessPolicy,
    role: str,
    fields: Iterable[FieldSpec],
    approvals: Sequence[Approval],
    *,
    reader: str,
    now: datetime,
) -> dict[str, AccessDecision]:
    """``decide_access`` for each field, keyed by field name."""
    return {f.name: decide_access(policy, role, f, approvals, reader=reader, now=now)
            for f in fields}


# -- loading -----------------------------------------------------------------------------------


def policy_path(source: str | Path) -> Path:
    """A bundled policy's file by name (``government``), or the path given.

    Bundled policies are read from the source tree's ``policies/`` folder, or, in an install
    that ships them as the ``policies`` package, from there.
    """
    if not (isinstance(source, str) and source in BUNDLED_POLICIES):
        return Path(source)
    in_tree = POLICIES_DIR / f"{source}.yaml"
    if in_tree.is_file():
        return in_tree
    try:
        return Path(str(resources.files("policies").joinpath(f"{source}.yaml")))
    except ModuleNotFoundError:
        return in_tree


def load_policy(source: str | Path, catalog: ProtectionCatalog | None = None) -> AccessPolicy:
    """Read and check a policy file (by path, or a bundled policy's name)."""
    path = policy_path(source)
    try:
        document = yaml.safe_load(path.read_text("utf-8"))
    except FileNotFoundError:
        raise PolicyError(f"no policy file at {path}") from None
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyError(f"{path} cannot be read as YAML ({type(exc).__name__})") from None
    return parse_policy(document, catalog or protection_catalog(), origin=str(path))


def parse_policy(document: Any, catalog: ProtectionCatalog, origin: str = "policy") -> AccessPolicy:
    """Build an ``AccessPolicy`` from its YAML mapping, checked against the tier catalog."""
    if not isinstance(document, Mapping):
        raise PolicyError(f"{origin}: expected a mapping with policy, departments, roles")
    try:
        name = str(document["policy"])
        approvals = document.get("approvals") or {}
        sources = frozenset(str(s) for s in approvals.get("sources", ()))
        approver_roles = frozenset(str(r) for r in approvals.get("approvers", ()))
        valid_for = timedelta(days=float(approvals.get("valid_for_days", 30)))
        departments = {
            str(d): Department(str(d), str(body["db_role"]),
                               frozenset(str(r) for r in body.get("rows", ())))
            for d, body in (document.get("departments") or {}).items()
        }
        roles = {str(r): _parse_role(str(r), body, catalog, departments, origin)
                 for r, body in (document.get("roles") or {}).items()}
        permissions = {str(p): _role_list(holders, f"permission {p}")
                       for p, holders in (document.get("permissions") or {}).items()}
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise PolicyError(f"{origin}: malformed ({type(exc).__name__}: {exc})") from None
    for department in departments.values():
        if not _DB_ROLE.match(department.db_role):
            raise PolicyError(f"{origin}: db_role {department.db_role!r} must match {_DB_ROLE.pattern}")
    if not roles:
        raise PolicyError(f"{origin}: a policy needs at least one role")
    unknown = sorted(set(permissions) - PERMISSIONS)
    if unknown:
        raise PolicyError(f"{origin}: unknown permission(s) {', '.join(unknown)} (known: "
                          f"{', '.join(sorted(PERMISSIONS))})")
    return AccessPolicy(name, MappingProxyType(roles), MappingProxyType(departments), sources,
                        valid_for, catalog, approver_roles, MappingProxyType(permissions))


def _role_list(value: Any, what: str) -> frozenset[str]:
    """A YAML list of role names (a bare string would otherwise grant its letters)."""
    if value is None:
        return frozenset()
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ValueError(f"{what}: expected a list of roles")
    return frozenset(str(r) for r in value)


def _parse_role(
    name: str, body: Mapping[str, Any], catalog: ProtectionCatalog,
    departments: Mapping[str, Department], origin: str,
) -> Role:
    department = str(body["department"])
    if department not in departments:
        raise PolicyError(f"{origin}: role {name!r} names unknown department {department!r}")
    try:
        tiers = frozenset(Tier.parse(t) for t in body.get("tiers", ())) | {Tier.PUBLIC}
    except TierCatalogError as exc:
        raise PolicyError(f"{origin}: role {name!r}: {exc}") from None
    fields: dict[tuple[str, str], int] = {}
    for typ, granted in (body.get("fields") or {}).items():
        for field_name, level in (granted or {}).items():
            try:
                spec = catalog.field(str(typ), str(field_name))
            except TierCatalogError as exc:
                raise PolicyError(f"{origin}: role {name!r}: {exc}") from None
            if not spec.protected:
                raise PolicyError(f"{origin}: role {name!r}: {typ}.{field_name} is public; "
                                  "public fields are readable by every role and are not listed")
            if spec.tier not in tiers:
                raise PolicyError(f"{origin}: role {name!r} reads {typ}.{field_name} "
                                  f"({spec.tier.label}) but does not hold that tier")
            if level not in LEVELS or isinstance(level, bool):
                raise PolicyError(f"{origin}: role {name!r}: approval level of {typ}.{field_name} "
                                  f"must be 1, 2 or 3")
            fields[(spec.schema, spec.name)] = int(level)
    return Role(name, department, tiers, MappingProxyType(fields))
