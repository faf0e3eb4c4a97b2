"""The audit hash chain: canonical encoding and row hashes, pure functions (docs/audit.md).

``row_hash`` = SHA-256 of the RFC 8785 (JCS) encoding of the record's fields plus ``prev_hash``
(the previous row's hash; 64 zeros for seq 1) and ``seq``: JCS, not ``json.dumps``, so an
auditor can recompute it in any language. A checkpoint is a C2SP signed note (origin, count,
base64 head hash) signed with the service's Ed25519 key (audit/checkpoints.py); audit/verify.py
walks a stored chain.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import rfc8785

from schemas.audit import AuditAction

GENESIS = "0" * 64
CHECKPOINT_ACTION = AuditAction.AUDIT_CHECKPOINT
HASHED_FIELDS = (
    "audit_id", "time", "actor", "action", "outcome", "reason", "correlation_id",
    "subject_ids", "source_topic", "source_partition", "source_offset", "detail",
)
_SAFE_INT = 2**53 - 1


# --- canonical encoding and the row hash ---------------------------------------------


def format_time(value: datetime) -> str:
    """RFC 3339 UTC with exactly six fractional digits; a naive time is taken as UTC."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="microseconds") + "Z"


def json_safe(value: Any) -> Any:
    """Map a JSON value to one RFC 8785 can encode *and* that survives a JSONB round trip.

    JSONB stores numbers as exact decimals, so ``1e20`` comes back as the integer
    100000000000000000000, which JCS refuses (outside the IEEE-754 safe range). Applying
    this on both sides (before storing, and to what is read back) makes both hash the same.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if -_SAFE_INT <= value <= _SAFE_INT:
            return value
        try:
            as_float = float(value)
        except OverflowError:
            return str(value)
        return as_float if Decimal(repr(as_float)) == value else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return str(value)


def hashed_view(values: Mapping[str, Any]) -> dict[str, Any]:
    """The chain's view of a record (an ``AuditRecord`` dump or a database row mapping)."""
    view = {name: values.get(name) for name in HASHED_FIELDS}
    audit_id = view["audit_id"]
    view["audit_id"] = str(audit_id if type(audit_id) is uuid.UUID else uuid.UUID(str(audit_id)))
    view["time"] = format_time(view["time"])
    view["subject_ids"] = list(view["subject_ids"] or [])
    view["detail"] = json_safe(view["detail"] or {})
    return view


def _json_dumps_is_jcs(value: Any) -> bool:
    """Whether ``json.dumps`` (sorted keys, no spaces, no ASCII escaping) writes ``value``
    byte for byte as RFC 8785 does.

    It does for strings (both escape exactly ``"``, ``\\`` and U+0000-U+001F, with the same
    short forms and lowercase ``\\u00xx``), booleans, null, integers in the IEEE-754 safe
    range, lists, and objects whose keys are ASCII (so that Python's code-point order is
    JCS's UTF-16 order). Floats (ECMAScript number formatting), other key characters and any
    other type are left to the rfc8785 library.
    """
    # A loop over a stack, not recursion through all(): it runs for every record the sink
    # chains, and the generators were half of the row hash's cost.
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int:
            if not -_SAFE_INT <= item <= _SAFE_INT:
                return False
        elif kind is dict:
            for key in item:
                if type(key) is not str or not key.isascii():
                    return False
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
        else:
            return False
    return True


def canonical_bytes(view: Mapping[str, Any], prev_hash: str, seq: int) -> bytes:
    """The exact bytes hashed for one row: JCS of the view plus ``prev_hash`` and ``seq``.

    By hand beside the library, because the library is pure Python: it took 43 us a record,
    a sixth of the audit sink's CPU (docs/performance.md); ``json.dumps`` in C takes 11 us
    and gives the same bytes for the values ``_json_dumps_is_jcs`` admits (tested against
    the library on generated values in tests/audit/test_chain.py).
    """
    body = {**view, "prev_hash": prev_hash, "seq": seq}
    if _json_dumps_is_jcs(body):
        try:
            return json.dumps(body, sort_keys=True, separators=(",", ":"),
                              ensure_ascii=False).encode()
        except UnicodeEncodeError:
            pass  # a lone surrogate: the library decides, as before
    return rfc8785.dumps(body)


def row_hash(view: Mapping[str, Any], prev_hash: str, seq: int) -> str:
    return hashlib.sha256(canonical_bytes(view, prev_hash, seq)).hexdigest()


