"""The schema catalog: each ``typ`` header value names one JSON Schema file, validated on receipt.

Validators are compiled once per process; ``jsonschema`` is the reference implementation of
JSON Schema and fast enough here (validation is a small share of ``attest bench verify``).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator

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
def _validator(typ: str) -> Draft202012Validator:
    schema = _load(typ)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def validation_errors(typ: str, payload: dict[str, Any]) -> list[str]:
    """Human-readable reasons ``payload`` does not fit ``typ`` (empty when it fits)."""
    errors = sorted(_validator(typ).iter_errors(payload), key=lambda e: list(e.path))
    return [
        f"{'/'.join(str(p) for p in err.path) or '(root)'}: {err.message[:200]}" for err in errors
    ]
