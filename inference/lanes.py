"""The pool's queue: priority lanes, bounded admission, batch cutting. Synchronous on purpose.

Only the event loop thread touches it, so it has no locks and no awaits; the pool adds the
waiting (for a full batch, for max wait) on top. Capacity counts texts, not requests, since
texts are what cost memory and model time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import deque
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from inference import metrics


class Priority(IntEnum):
    """Lanes, most urgent first: live traffic, then replays, then backfills."""

    LIVE = 0
    REPLAY = 1
    BACKFILL = 2


@dataclass(eq=False)
class Request:
    """The texts of one embed call that the cache did not answer, and their progress."""

    texts: list[str]
    keys: list[bytes]
    priority: Priority
    future: asyncio.Future[np.ndarray]
    admitted_at: float = 0.0
    admitted: bool = False
    started: bool = False
    withdrawn: bool = False
    next: int = 0  # first text not yet cut into a batch
    filled: int = 0
    vectors: np.ndarray | None = None

    def deliver(self, start: int, end: int, rows: np.ndarray) -> None:
        """Rows for texts[start:end]; the caller's future resolves once every row is in."""
        if self.future.done():  # timed out or cancelled meanwhile
            return
        if self.vectors is None:
            self.vectors = np.empty((len(self.texts), rows.shape[1]), dtype=np.float32)
        self.vectors[start:end] = rows
        self.filled += end - start
        if self.filled == len(self.texts):
            self.future.set_result(self.vectors)

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)


Segment = tuple[Request, int, int]  # texts[start:end] of one request inside a batch


class LaneQueue:
    """Strict-priority lanes of admitted requests, plus the requests waiting for room."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.queued = 0  # admitted texts not yet cut into a batch
        self._lanes: dict[Priority, deque[Request]] = {p: deque() for p in Priority}
        self._waiters: list[tuple[int, int, Request]] = []
        self._seq = itertools.count()

    @property
    def waiting(self) -> int:
        """Requests held back because the queue is full."""
        return sum(1 for *_, request in self._waiters if not request.withdrawn)

    def submit(self, request: Request) -> bool:
        """Queue a request, admitting it now if there is room; True if anything was admitted."""
        heapq.heappush(self._waiters, (request.priority, next(self._seq), request))
        return self.admit()

    def admit(self) -> bool:
        """Move waiting requests into their lanes, most urgent first, while there is room.

        Head-of-line: when the most urgent waiter does not fit, nobody behind it jumps ahead,
        so a large request is never starved by a stream of small ones. An empty queue admits
        any request, however large, so an oversize request cannot wait forever.
        """
        admitted = False
        while self._waiters:
            request = self._waiters[0][2]
            if not request.withdrawn:
                if self.queued and self.queued + len(request.texts) > self.capacity:
                    break
                request.admitted, request.admitted_at = True, time.monotonic()
                self._lanes[request.priority].append(request)
                self.queued += len(request.texts)
                admitted = True
            heapq.heappop(self._waiters)
        metrics.QUEUE_DEPTH.set(self.queued)
        metrics.WAITING_CALLERS.set(len(self._waiters))
        return admitted

    def withdraw(self, request: Request) -> bool:
        """Take a finished, failed, timed-out or cancelled request's remaining texts off the queue.

        True when the room this made let waiting requests in.
        """
        if request.withdrawn:
            return False
        request.withdrawn = True
        remaining = len(request.texts) - request.next
        if request.admitted and remaining:
            self.queued -= remaining
            request.next = len(request.texts)
            self._lanes[request.priority].remove(request)
        return self.admit()

    def oldest(self) -> float | None:
        """Admission time of the longest-queued request, None when nothing is queued."""
        heads = [lane[0].admitted_at for lane in self._lanes.values() if lane]
        return min(heads) if heads else None

    def take(self, limit: int) -> list[Segment]:
        """Cut up to ``limit`` texts from the lanes in priority order (a request may split)."""
        batch: list[Segment] = []
        budget, now = limit, time.monotonic()
        for lane in self._lanes.values():
            while lane and budget:
                request = lane[0]
                start = request.next
                end = min(len(request.texts), start + budget)
                if not request.started:
                    request.started = True
                    lane_name = request.priority.name.lower()
                    metrics.QUEUE_WAIT.labels(lane_name).observe(now - request.admitted_at)
                batch.append((request, start, end))
                request.next = end
                budget -= end - start
                self.queued -= end - start
                if end == len(request.texts):
                    lane.popleft()
        self.admit()
        return batch

    def unfinished(self) -> list[Request]:
        """Every queued or waiting request (to fail them when the pool stops for good)."""
        queued = [request for lane in self._lanes.values() for request in lane]
        return queued + [w[2] for w in self._waiters if not w[2].withdrawn]
