"""agents.intake.SeenEvents: the replay fast path's memory of accepted event ids."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from agents.intake import SeenEvents
from agents.messages import IncomingMessage


def at(topic: str, partition: int, offset: int) -> IncomingMessage:
    return IncomingMessage(topic, partition, offset, None, b"", datetime.now(UTC))


def test_it_answers_where_an_id_was_accepted_exactly() -> None:
    seen = SeenEvents(10)
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    seen.add(a, at("attest.transactions", 3, 2**40 + 7))
    seen.add(b, at("attest.documents", 0, 0))
    assert seen.position_of(a) == f"attest.transactions/3/{2**40 + 7}"
    assert seen.position_of(b) == "attest.documents/0/0"
    assert seen.position_of(str(uuid.uuid4())) is None


def test_a_non_uuid_id_never_collides_with_the_uuid_of_the_same_digits() -> None:
    seen = SeenEvents(10)
    canonical = str(uuid.uuid4())
    seen.add(canonical, at("t", 0, 1))
    assert seen.position_of(canonical.replace("-", "")) is None
    assert seen.position_of(canonical.upper()) is None
    seen.add("not-a-uuid", at("t", 0, 2))
    assert seen.position_of("not-a-uuid") == "t/0/2"


def test_the_oldest_ids_are_forgotten_past_its_capacity() -> None:
    seen = SeenEvents(3)
    ids = [str(uuid.uuid4()) for _ in range(5)]
    for offset, event_id in enumerate(ids):
        seen.add(event_id, at("t", 0, offset))
    assert [seen.position_of(i) for i in ids] == [None, None, "t/0/2", "t/0/3", "t/0/4"]


def test_an_id_added_again_is_kept_once_and_moves_to_its_new_position() -> None:
    seen = SeenEvents(2)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    seen.add(first, at("t", 0, 0))
    seen.add(first, at("t", 1, 9))
    seen.add(second, at("t", 0, 1))
    assert seen.position_of(first) == "t/1/9" and seen.position_of(second) == "t/0/1"


def test_capacity_zero_keeps_nothing() -> None:
    seen = SeenEvents(0)
    event_id = str(uuid.uuid4())
    seen.add(event_id, at("t", 0, 0))
    assert seen.position_of(event_id) is None


def test_a_position_outside_kafkas_ranges_is_not_cached() -> None:
    seen = SeenEvents(10)
    odd, fine = str(uuid.uuid4()), str(uuid.uuid4())
    seen.add(odd, at("t", -1, 5))
    seen.add(fine, at("t", 0, 5))
    assert seen.position_of(odd) is None and seen.position_of(fine) == "t/0/5"


def test_ids_whose_integers_share_a_hash_are_stored_under_keys_that_do_not() -> None:
    """Ints hash as n mod (2**61 - 1) with no per-process key: ids built that way must not
    all land in one hash chain."""
    base = uuid.uuid4().int >> 4
    ids = [str(uuid.UUID(int=base + k * (2**61 - 1))) for k in range(50)]
    assert len({hash(uuid.UUID(i).int) for i in ids}) == 1
    seen = SeenEvents(100)
    for offset, event_id in enumerate(ids):
        seen.add(event_id, at("t", 0, offset))
    assert len({hash(k) for k in seen._where}) == len(ids)
    assert [seen.position_of(i) for i in ids] == [f"t/0/{n}" for n in range(len(ids))]
