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
    """Which rules ``payload`` breaks, as ``field: keyword`` (empty when it fits).

    Deliberately without the validator's message: it quotes the offending value, and that
    value may be a protected field (an account, an income) bound for the dead-letter headers
    and the append-only audit log, where it could never be encrypted or forgotten.
    """
    validator = _validator(typ)
    if validator.is_valid(payload):
        return []
    problems = []
    for err in validator.iter_errors(payload):
        where = "/".join(str(p) for p in err.instance_path) or "(root)"
        keyword = str(err.schema_path[-1]) if len(err.schema_path) else "invalid"
        problems.append(f"{where}: {keyword}")
    return sorted(set(problems))
