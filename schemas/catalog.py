"""The schema catalog: each ``typ`` header value names one JSON Schema file, validated on receipt.

Validation uses ``jsonschema-rs`` (Rust): about 1 µs per event against ~200 µs for the pure
Python ``jsonschema`` (which would halve ``attest bench verify``), and its regexes follow
ECMA-262 as JSON Schema requires: ``$`` is the end of input (Python's ``re`` also matches
before a trailing newline) and ``\\d`` is ASCII only.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema_rs

TRANSACTION_V1 = "attest.transaction.v1"
DOCUMENT_V1 = "attest.document.v1"
APPROVAL_V1 = "attest.approval.v1"
AUDIT_V1 = "attest.audit.v1"

#: Schemas a producer may sign (the audit schema is Attest's own output).
EVENT_TYPES = (TRANSACTION_V1, DOCUMENT_V1, APPROVAL_V1)


def schema_document(typ: str) -> dict[str, Any]:
    """The JSON Schema of ``typ``; raises ``KeyError`` for an unknown schema name."""
    return _load(typ)


@cache
def _load(typ: str) -> dict[str, Any]:
    if typ not in (*EVENT_TYPES, AUDIT_V1):
        raise KeyError(typ)
    text = resources.files("schemas").joinpath("json", f"{typ}.json").read_text("utf-8")
    return json.loads(text)


@cache
def _validator(typ: str) -> Any:
    return jsonschema_rs.Draft202012Validator(_load(typ))


def validation_errors(typ: str, payload: dict[str, Any]) -> list[str]:
    """Human-readable reasons ``payload`` does not fit ``typ`` (empty when it fits)."""
    validator = _validator(typ)
    if validator.is_valid(payload):
        return []
    errors = sorted(validator.iter_errors(payload), key=lambda e: [str(p) for p in e.instance_path])
    return [
        f"{'/'.join(str(p) for p in err.instance_path) or '(root)'}: {err.message[:200]}"
        for err in errors
    ]
