"""Operator time arguments: an RFC 3339 / ISO 8601 instant, or a duration ago ("15m")."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from operations.errors import BadTime

_AGO = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """``2026-12-01T00:00:00Z``, ``2026-12-01`` (UTC midnight) or ``90m``/``2h``/``1d`` ago.

    A time without a zone is UTC: operators compare it with broker and audit times, which
    are UTC. A time in the future is refused (a replay "since tomorrow" is always a typo).
    Raises ``BadTime`` with one sentence.
    """
    now = now or datetime.now(UTC)
    value = text.strip()
    relative = _AGO.fullmatch(value)
    if relative:
        return now - timedelta(seconds=float(relative.group(1)) * _UNIT_SECONDS[relative.group(2)])
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise BadTime(
            f"{text!r} is not a time: use RFC 3339 (2026-12-01T09:30:00Z) or a duration ago "
            "(30m, 2h, 1d)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if parsed > now + timedelta(minutes=1):
        raise BadTime(f"{text!r} is in the future")
    return parsed


def to_millis(when: datetime) -> int:
    """Kafka timestamps are milliseconds since the epoch."""
    return int(when.timestamp() * 1000)
