"""Rewind a stage whose consumer has read past the end of its partition's log.

A partition's log can start again under a running consumer: the embedded broker keeps its
topics in memory and forgets them when it restarts, and on any broker a topic can be deleted
and recreated. Faust then keeps the old log's positions in memory. Its fetch loop drops every
message below the last offset it read ("DROPPED MESSAGE ROFF" in faust.transport.consumer),
and an acknowledgement of a batch held from the old log commits an old, too large offset
into the new group; so the stage skips the new log's first messages, or waits until the new
log grows past the old position (the enrichment stall of docs/reliability.md).

A healthy consumer has never read at or past the end of its log, and nothing it committed
lies past that end: either one means the log restarted. Neither catches a new log that has
already grown past the old position when the check runs (producers resend at once after a
restart; the fault suite's enrichment stage missed one that way), so the guard also
remembers the last message it saw of each partition (its offset and SHA-256) and asks the
broker whether that position still holds those bytes: other bytes there mean a new log.
That alone misses a consumer that went on reading the new log from its old position before
the check ran (its last message then is a new-log message, which the broker does hold; a CI
run of the fault suite lost 32 classifications that way), so the guard also keeps the first
message it saw of each partition, its anchor, and checks that one too: a log that only grows
holds the anchor's bytes for as long as retention keeps it.
The stage then forgets what it held for the partition and reads it again from the first
offset the broker holds. Reading again is safe because every effect is idempotent
(docs/reliability.md): intake recognises its own earlier deliveries, the audit sink stores
an ``audit_id`` once, inferences are stored once.

Why by hand, and on Faust's private state: neither Faust nor aiokafka notices a log that
restarts below the consumer (aiokafka resets a position only on OFFSET_OUT_OF_RANGE, which the
embedded broker does not send), and Faust exposes no call to forget a partition's offsets.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterable
from typing import Any, Protocol

from agents.messages import IncomingMessage

log = logging.getLogger("attest.worker")

#: Faust consumer's per-partition bookkeeping that belongs to the old log.
_HELD_STATE = ("_read_offset", "_committed_offset", "_acked", "_acked_index", "_gap")


class Spans(Protocol):
    def span(self, topic: str, partition: int) -> tuple[int, int] | None: ...

    def holds(self, topic: str, partition: int, offset: int, sha256: bytes) -> bool | None: ...


def log_restarted(last_read: int | None, committed: int | None, end: int) -> bool:
    """Whether a consumer's positions lie past a partition's end (``end``: next offset written).

    ``last_read`` is the offset of the last message read, ``committed`` the next offset to
    read; on a log that only grows neither can pass ``end``.
    """
    return (last_read is not None and last_read >= end) or (committed is not None and committed > end)


class LogResetGuard:
    """Checks every assigned partition of one Faust app; rewinds those whose log restarted."""

    def __init__(self, app: Any, spans: Spans) -> None:
        self._app = app
        self._spans = spans
        #: (topic, partition) -> (offset, SHA-256 of the value) of the last message seen.
        self._last_seen: dict[tuple[str, int], tuple[int, bytes]] = {}
        #: The same for the first message seen: kept until a rewind or retention removes it.
        self._anchor: dict[tuple[str, int], tuple[int, bytes]] = {}

    def saw(self, messages: Iterable[IncomingMessage]) -> None:
        """Remember each partition's last message of a batch (one hash per partition)."""
        last: dict[tuple[str, int], IncomingMessage] = {}
        for message in messages:
            last[(message.topic, message.partition)] = message
        for where, message in last.items():
            seen = (message.offset, hashlib.sha256(message.value).digest())
            self._last_seen[where] = seen
            self._anchor.setdefault(where, seen)

    async def _replaced(self, topic: str, partition: int, low: int) -> int | None:
        """The offset of a message seen that the log no longer holds (None: all still held)."""
        where = (topic, partition)
        anchor = self._anchor.get(where)
        if anchor is not None and anchor[0] < low:
            # Removed by retention, not a restart: the last message seen anchors from now on.
            anchor = self._anchor[where] = self._last_seen[where]
        for seen in dict.fromkeys(s for s in (anchor, self._last_seen.get(where)) if s):
            if seen[0] < low:
                continue  # nothing seen, or removed by retention: not a restart
            held = await asyncio.to_thread(self._spans.holds, topic, partition, *seen)
            if held is False:
                return seen[0]
        return None

    async def check(self) -> list[tuple[str, int]]:
        """Rewind what needs it; return the (topic, partition) rewound."""
        consumer = self._app.consumer
        read_offsets = getattr(consumer, "_read_offset", None)
        committed_offsets = getattr(consumer, "_committed_offset", None)
        if read_offsets is None or committed_offsets is None:
            return []  # a Faust without this bookkeeping: nothing to correct
        rewound = []
        assigned = consumer.assignment()
        owned = {(tp.topic, tp.partition) for tp in assigned}
        for where in [w for w in self._anchor if w not in owned]:
            # Revoked: a later owner of the partition may read it from elsewhere.
            self._anchor.pop(where, None)
            self._last_seen.pop(where, None)
        for tp in sorted(assigned):
            # Positions first, the end second: the end only grows, so a position read before
            # it can be past it only if the log restarted.
            last_read, committed = read_offsets.get(tp), committed_offsets.get(tp)
            if last_read is None and committed is None:
                continue
            span = await asyncio.to_thread(self._spans.span, tp.topic, tp.partition)
            if span is None:
                continue
            low, end = span
            if log_restarted(last_read, committed, end):
                log.warning("%s/%d: this stage had read to offset %s (committed %s) but the log "
                            "ends at %d: it started again (a broker that lost its topics, or a "
                            "topic recreated); reading it again from offset %d", tp.topic,
                            tp.partition, last_read, committed, end, low)
            elif (replaced := await self._replaced(tp.topic, tp.partition, low)) is not None:
                log.warning("%s/%d: offset %d no longer holds the message this stage read there: "
                            "the log started again (a broker that lost its topics, or a topic "
                            "recreated); reading it again from offset %d", tp.topic,
                            tp.partition, replaced, low)
            else:
                continue
            self._last_seen.pop((tp.topic, tp.partition), None)
            self._anchor.pop((tp.topic, tp.partition), None)
            for name in _HELD_STATE:
                held = getattr(consumer, name, None)
                if held is not None:
                    held.pop(tp, None)
            try:
                await consumer.seek(tp, low)
            except Exception as exc:  # noqa: BLE001 - revoked meanwhile: the next owner seeks
                log.warning("%s/%d: could not rewind (%s); the next check tries again",
                            tp.topic, tp.partition, exc)
                continue
            rewound.append((tp.topic, tp.partition))
        return rewound
