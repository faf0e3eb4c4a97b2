"""Which consumer positions say that a partition's log started again under the stage."""

from __future__ import annotations

from streams.log_reset import log_restarted


def test_positions_inside_the_log_are_healthy() -> None:
    assert not log_restarted(last_read=None, committed=None, end=0)
    assert not log_restarted(last_read=9, committed=10, end=10)  # read to the very end
    assert not log_restarted(last_read=4, committed=3, end=10)
    assert not log_restarted(last_read=None, committed=10, end=10)


def test_a_position_past_the_end_means_the_log_started_again() -> None:
    # The broker-restart fault: the stage had read to 130 of the old log, the new one holds 80.
    assert log_restarted(last_read=130, committed=None, end=80)
    assert log_restarted(last_read=80, committed=None, end=80)  # offset 80 was never written
    # An acknowledgement from the old log committed 131 into the new broker's group.
    assert log_restarted(last_read=None, committed=131, end=80)
    assert log_restarted(last_read=None, committed=1, end=0)
