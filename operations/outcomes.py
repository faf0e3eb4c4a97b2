"""Outcome counts of a replay: what happened to each replayed message, by name.

``stored`` (new row), ``unchanged`` (already stored from these very bytes at this position),
``rejected:<reason>``; a dead-letter retry adds ``duplicate`` (the same rejection twice in
the topic), ``filtered`` (not selected) and ``unretryable`` (no usable source headers).
"""

from __future__ import annotations

import hashlib
from collections import Counter

from agents.messages import BatchOutput, IncomingMessage
from security.errors import Rejection
from security.reasons import RejectReason
from security.verification import VerifiedEvent

STORED = "stored"
UNCHANGED = "unchanged"
DUPLICATE = "duplicate"
FILTERED = "filtered"
UNRETRYABLE = "unretryable"


def rejected(reason: str) -> str:
    return f"rejected:{reason}"


def count_output(batch_size: int, output: BatchOutput) -> Counter[str]:
    """Count one processed batch: every message lands in exactly one bucket.

    Messages the intake recognised as stored on an earlier delivery, though they would be
    rejected today (a key revoked since), produce neither an acceptance nor a dead letter;
    they are ``unchanged`` too.
    """
    counts: Counter[str] = Counter()
    counts[STORED] += output.stored
    counts[UNCHANGED] += len(output.accepted) - output.stored
    for letter in output.dead_letters:
        counts[rejected(letter.reason)] += 1
    counts[UNCHANGED] += batch_size - len(output.accepted) - len(output.dead_letters)
    return +counts


#: Where a stored event was read, and the SHA-256 of its bytes (None before migration 0005).
StoredPosition = tuple[str, int, int, bytes | None]


def dry_run_outcomes(
    accepted: list[tuple[IncomingMessage, VerifiedEvent]],
    refused: list[tuple[IncomingMessage, Rejection]],
    stored: dict[str, StoredPosition],
    claimed_ids: dict[str, str],
) -> Counter[str]:
    """What a real replay of these verified/refused messages would count, writing nothing.

    ``stored`` maps event ids to their stored position; ``claimed_ids`` maps a refused
    message's position to the event id it claims (a stored message refused today, e.g.
    because its key was revoked since, is a redelivery and changes nothing).
    """
    counts: Counter[str] = Counter()
    for message, event in accepted:
        where = stored.get(event.event_id)
        if where is None:
            counts[STORED] += 1
        elif same_message(where, message):
            counts[UNCHANGED] += 1
        else:
            counts[rejected(RejectReason.REPLAYED.value)] += 1
    for message, rejection in refused:
        claimed = claimed_ids.get(message.position)
        where = stored.get(claimed) if claimed else None
        if where is not None and same_message(where, message):
            counts[UNCHANGED] += 1
        else:
            counts[rejected(rejection.reason.value)] += 1
    return counts


def same_message(where: StoredPosition, message: IncomingMessage) -> bool:
    """The storage layer's redelivery rule: same position, and same bytes when both are known."""
    topic, partition, offset, digest = where
    if (topic, partition, offset) != (message.topic, message.partition, message.offset):
        return False
    return digest is None or digest == hashlib.sha256(message.value).digest()
