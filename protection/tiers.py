"""Field tiers: which tier each stored field has, read from ``schemas/tiers.yaml`` (one place).

Pure data: no keys, no SQL. ``protection_catalog()`` is what the protector, the policy loader,
the storage layer and the tests all consult, so a field's tier is declared exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import IntEnum
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any

import yaml

from protection.errors import TierCatalogError

TIERS_RESOURCE = "tiers.yaml"


class Tier(IntEnum):
    """Ordered: ``public < internal < confidential < restricted``. The value is the wire code."""

    PUBLIC = 0
    INTERNAL = 1
    CONFIDENTIAL = 2
    RESTRICTED = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Tier:
        try:
            return cls[str(text).upper()]
        except KeyError:
            raise TierCatalogError(
                f"unknown tier {text!r} (expected one of {', '.join(t.label for t in cls)})"
            ) from None


#: Tiers whose fields are encrypted (every tier above public).
PROTECTED_TIERS = (Tier.INTERNAL, Tier.CONFIDENTIAL, Tier.RESTRICTED)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One stored field: its tier and, for identifiers, the blind-index domain."""

    schema: str
    name: str
    tier: Tier
    blind_index: str | None = None

    @property
    def protected(self) -> bool:
        return self.tier is not Tier.PUBLIC

    @property
    def index_column(self) -> str | None:
        """The column of the field's blind index, ``<field>_bidx``, when it has one."""
        return f"{self.name}_bidx" if self.blind_index else None


@dataclass(frozen=True, slots=True)
class SchemaProtection:
    """How one event schema is stored: its table, subject, department field and field tiers."""

    typ: str
    table: str
    subject_field: str
    subject_domain: str
    department_field: str
    fields: Mapping[str, FieldSpec]

    def field(self, name: str) -> FieldSpec:
        try:
            return self.fields[name]
        except KeyError:
            raise TierCatalogError(f"field {name!r} of {self.typ} has no tier") from None

    @property
    def protected_fields(self) -> tuple[FieldSpec, ...]:
        return tuple(f for f in self.fields.values() if f.protected)

    @property
    def indexed_fields(self) -> tuple[FieldSpec, ...]:
        return tuple(f for f in self.fields.values() if f.blind_index)


@dataclass(frozen=True, slots=True)
class ProtectionCatalog:
    """Every schema's protection, keyed by ``typ``."""

    schemas: Mapping[str, SchemaProtection]

    def schema(self, typ: str) -> SchemaProtection:
        try:
            return self.schemas[typ]
        except KeyError:
            raise TierCatalogError(f"schema {typ!r} is not declared in {TIERS_RESOURCE}") from None

    def field(self, typ: str, name: str) -> FieldSpec:
        return self.schema(typ).field(name)

    def all_fields(self) -> Iterator[FieldSpec]:
        for schema in self.schemas.values():
            yield from schema.fields.values()

    @property
    def domains(self) -> frozenset[str]:
        """Every identifier domain: blind-index domains and subject domains."""
        found = {s.subject_domain for s in self.schemas.values()}
        found.update(f.blind_index for f in self.all_fields() if f.blind_index)
        return frozenset(found)


def parse_catalog(document: Mapping[str, Any]) -> ProtectionCatalog:
    """Build and check a catalog from the YAML document's mapping."""
    if not isinstance(document, Mapping) or not document:
        raise TierCatalogError(f"{TIERS_RESOURCE} must map schema names to their protection")
    schemas: dict[str, SchemaProtection] = {}
    for typ, body in document.items():
        schemas[str(typ)] = _parse_schema(str(typ), body)
    return ProtectionCatalog(MappingProxyType(schemas))


def _parse_schema(typ: str, body: Any) -> SchemaProtection:
    if not isinstance(body, Mapping):
        raise TierCatalogError(f"{typ}: expected a mapping")
    try:
        table, subject, department, raw_fields = (
            body["table"], body["subject"], body["department"], body["fields"]
        )
        subject_field, subject_domain = subject["field"], subject["domain"]
    except (KeyError, TypeError) as exc:
        raise TierCatalogError(f"{typ}: missing {exc}") from None
    fields: dict[str, FieldSpec] = {}
    for name, declared in raw_fields.items():
        if isinstance(declared, Mapping):
            spec = FieldSpec(typ, str(name), Tier.parse(declared.get("tier", "")),
                             declared.get("blind_index"))
        else:
            spec = FieldSpec(typ, str(name), Tier.parse(declared))
        if spec.blind_index and not spec.protected:
            raise TierCatalogError(f"{typ}.{name}: a blind index is only for protected fields")
        fields[spec.name] = spec
    if subject_field not in fields:
        raise TierCatalogError(f"{typ}: subject field {subject_field!r} is not a field")
    if department not in fields or fields[department].protected:
        raise TierCatalogError(f"{typ}: department field {department!r} must be a public field")
    indexed = fields[subject_field].blind_index
    if indexed is not None and indexed != subject_domain:
        raise TierCatalogError(
            f"{typ}: the subject {subject_field!r} is indexed in domain {indexed!r}, "
            f"not its subject domain {subject_domain!r}"
        )
    return SchemaProtection(
        typ=typ, table=str(table), subject_field=str(subject_field),
        subject_domain=str(subject_domain), department_field=str(department),
        fields=MappingProxyType(fields),
    )


@cache
def protection_catalog() -> ProtectionCatalog:
    """The catalog shipped beside the schemas (``schemas/tiers.yaml``), loaded once."""
    text = resources.files("schemas").joinpath(TIERS_RESOURCE).read_text("utf-8")
    return parse_catalog(yaml.safe_load(text))
