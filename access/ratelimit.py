"""A per-person sliding-window limit on lookups by identifier (blind-index lookups).

Kept in the service's memory: the point is that a reader cannot enumerate an identifier space
through the service, and the service is the only place a blind index can be computed.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from access.errors import RateLimited


class SlidingWindowLimit:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = per_minute
        self._clock = clock
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def take(self, who: str) -> None:
        """Count one lookup by ``who``; raise ``RateLimited`` past the limit (nothing counted)."""
        now = self._clock()
        with self._lock:
            window = self._seen.setdefault(who, deque())
            while window and now - window[0] >= 60.0:
                window.popleft()
            if len(window) >= self._limit:
                wait = 60.0 - (now - window[0])
                raise RateLimited(f"lookup limit reached ({self._limit} per minute); "
                                  f"try again in {wait:.0f} s")
            window.append(now)
