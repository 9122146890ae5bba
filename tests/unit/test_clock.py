"""The real clock's timer thread: timers fire in order, a sooner one is not missed."""

from __future__ import annotations

import threading

import pytest

from auth_module.core.clock import FakeClock, RealClock

pytestmark = pytest.mark.timeout(10)


def test_a_sooner_timer_armed_after_a_later_one_still_fires_first() -> None:
    """The timer thread sleeps until its next timer; a sooner one must wake it up."""
    clock = RealClock()
    fired: list[str] = []
    done = threading.Event()
    try:
        clock.call_later(30, lambda: fired.append("late"))
        clock.call_later(0.05, lambda: (fired.append("soon"), done.set()))
        assert done.wait(5), "the sooner timer never fired"
        assert fired == ["soon"]
    finally:
        clock.stop()


def test_cancelled_timers_do_not_fire_and_many_timers_fire_in_order() -> None:
    clock = RealClock()
    fired: list[int] = []
    done = threading.Event()
    try:
        handles = [clock.call_later(0.01 * (i % 5), lambda i=i: fired.append(i)) for i in range(20)]
        handles[3].cancel()
        clock.call_later(0.2, done.set)
        assert done.wait(5)
        assert 3 not in fired and sorted(fired) == [i for i in range(20) if i != 3]
    finally:
        clock.stop()


def test_fake_clock_fires_due_timers_in_time_order() -> None:
    clock = FakeClock()
    fired: list[str] = []
    clock.call_later(2, lambda: fired.append("b"))
    clock.call_later(1, lambda: fired.append("a"))
    clock.advance(1.5)
    assert fired == ["a"]
    clock.advance(1)
    assert fired == ["a", "b"]
    assert clock.pending() == 0
