"""Wait on a condition, never for a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: How often a condition is polled. Short: polling is cheap next to what the tests wait for.
POLL_S = 0.1


def wait_for(condition: Callable[[], T], timeout_s: float, what: str,
             interval_s: float = POLL_S) -> T:
    """Poll ``condition`` until it returns something truthy; return that.

    Fails the test with ``what`` (and the time waited) when ``timeout_s`` passes first. An
    exception the condition raises is not caught: a broken probe should fail at once.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


def wait_until(probe: Callable[[], T], done: Callable[[T], bool], timeout_s: float = 60.0) -> T:
    """Call ``probe`` until ``done(result)``; return the last result (the caller asserts).

    For checks whose failure message is best written by the test itself: on a timeout the
    last result comes back, and the test's own assertion says what was wrong with it.
    """
    deadline = time.monotonic() + timeout_s
    result = probe()
    while not done(result) and time.monotonic() < deadline:
        time.sleep(POLL_S * 3)
        result = probe()
    return result
