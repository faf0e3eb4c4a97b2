"""A record's timestamp is read defensively: any 64-bit number a producer sends is at worst
"no timestamp", never an exception that stops the stage (review finding H1)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from streams.app import LOG_APPEND_TIME, _broker_time

CREATE_TIME = 0


@pytest.mark.parametrize("stamp", [2.0**62, 1e20, -1.0, 0.0, None, float("inf")])
def test_a_timestamp_that_is_no_time_is_none(stamp: float | None) -> None:
    message = SimpleNamespace(timestamp=stamp, timestamp_type=LOG_APPEND_TIME)
    assert _broker_time(message, trust_create_time=True) is None


def test_create_time_counts_only_where_the_operator_trusts_it() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    created = SimpleNamespace(timestamp=now, timestamp_type=CREATE_TIME)
    appended = SimpleNamespace(timestamp=now, timestamp_type=LOG_APPEND_TIME)
    assert _broker_time(created, trust_create_time=True) == datetime(2026, 12, 1, tzinfo=UTC)
    assert _broker_time(created, trust_create_time=False) is None
    assert _broker_time(appended, trust_create_time=False) == datetime(2026, 12, 1, tzinfo=UTC)
