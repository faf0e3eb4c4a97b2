"""Time to offset: the first offset of a partition whose message is at or after a time.

Kafka answers this with ListOffsets, but not every broker does (the embedded Tansu answers
0 for every time), so Attest searches the partition itself: message timestamps grow with
offsets in an append-only log, and a binary search needs about log2(n) single-message reads.
"""

from __future__ import annotations

from collections.abc import Callable


def first_offset_at_or_after(
    timestamp_at: Callable[[int], int | None], low: int, high: int, target_ms: int
) -> int:
    """The smallest offset in [low, high) whose timestamp is >= ``target_ms``; ``high`` if none.

    ``timestamp_at(offset)`` returns the message's timestamp in milliseconds, or None when no
    message is readable there (then the search treats it as before the target and moves on).
    """
    lo, hi = low, high
    while lo < hi:
        mid = (lo + hi) // 2
        ts = timestamp_at(mid)
        if ts is not None and ts >= target_ms:
            hi = mid
        else:
            lo = mid + 1
    return lo
