"""Time for the core: a real clock with one timer thread, and a fake one for tests.

The core never sleeps and never reads the system time directly. It asks a :class:`Clock`
for "now" and for timers, so unit tests can move time forward by hand (``FakeClock.advance``)
and see every timeout fire deterministically, without a single ``sleep``.

Timer callbacks run on the clock's thread (real) or on the caller of ``advance`` (fake).
They must take the core's lock themselves and check ``handle.cancelled`` under it: a timer
that fires while another thread cancels it is then harmless.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Callable, Protocol

import structlog

log = structlog.get_logger("clock")


@dataclass(eq=False)
class TimerHandle:
    """A scheduled callback. ``cancel`` is idempotent and safe from any thread."""

    due: float
    callback: Callable[[], None]
    cancelled: bool = field(default=False)

    def cancel(self) -> None:
        self.cancelled = True


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never jumps; used for every relative timeout."""

    def utcnow(self) -> datetime:
        """Wall-clock time (aware, UTC); used only for reservation expiry times."""

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback`` once, ``delay_s`` seconds from now."""

    def call_at(self, when: datetime, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback`` once at wall-clock ``when`` (or at once if it has passed)."""


class _TimerQueue:
    """A heap of timers ordered by due time, ties broken by insertion order."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()

    def push(self, handle: TimerHandle) -> None:
        heapq.heappush(self._heap, (handle.due, next(self._seq), handle))

    def next_due(self) -> float | None:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> TimerHandle | None:
        due = self.next_due()
        if due is None or due > now:
            return None
        return heapq.heappop(self._heap)[2]


def _run(handle: TimerHandle) -> None:
    if handle.cancelled:
        return
    try:
        handle.callback()
    except Exception as exc:  # a broken callback must not stop every other timer
        log.error("timer callback failed", error=repr(exc))


class RealClock:
    """Monotonic time and a single daemon thread that fires timers."""

    def __init__(self) -> None:
        self._queue = _TimerQueue()
        self._cond = threading.Condition()
        self._stopped = False
        self._wake_at = float("inf")  # when the timer thread wakes by itself next
        self._thread = threading.Thread(target=self._loop, name="clock", daemon=True)
        self._thread.start()

    def monotonic(self) -> float:
        return time.monotonic()

    def utcnow(self) -> datetime:
        return datetime.now(UTC)

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> TimerHandle:
        handle = TimerHandle(self.monotonic() + max(0.0, delay_s), callback)
        with self._cond:
            self._queue.push(handle)
            # Wake the timer thread only if it would otherwise sleep past this timer: a
            # token's 30 s timer must not cost a thread switch on the authorization path.
            if handle.due < self._wake_at:
                self._cond.notify()
        return handle

    def call_at(self, when: datetime, callback: Callable[[], None]) -> TimerHandle:
        return self.call_later((when - self.utcnow()).total_seconds(), callback)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=2)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopped:
                        return
                    handle = self._queue.pop_due(self.monotonic())
                    if handle is not None:
                        break
                    due = self._queue.next_due()
                    self._wake_at = float("inf") if due is None else due
                    self._cond.wait(None if due is None else max(0.0, due - self.monotonic()))
                    self._wake_at = float("-inf")  # awake: every new timer is seen anyway
            _run(handle)


class FakeClock:
    """A clock that moves only when told to. Timers fire inside :meth:`advance`."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = 0.0
        self._wall0 = start or datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
        self._queue = _TimerQueue()
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        return self._now

    def utcnow(self) -> datetime:
        return self._wall0 + timedelta(seconds=self._now)

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> TimerHandle:
        handle = TimerHandle(self._now + max(0.0, delay_s), callback)
        with self._lock:
            self._queue.push(handle)
        return handle

    def call_at(self, when: datetime, callback: Callable[[], None]) -> TimerHandle:
        return self.call_later((when - self.utcnow()).total_seconds(), callback)

    def advance(self, seconds: float) -> None:
        """Move time forward, firing every timer that falls due on the way, in order."""
        target = self._now + seconds
        while True:
            with self._lock:
                due = self._queue.next_due()
                if due is None or due > target:
                    break
                handle = self._queue.pop_due(due)
            assert handle is not None
            self._now = max(self._now, handle.due)
            _run(handle)
        self._now = target

    def pending(self) -> int:
        """How many timers are still scheduled (for tests)."""
        with self._lock:
            return sum(1 for _, _, h in self._queue._heap if not h.cancelled)
