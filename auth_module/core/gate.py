"""Holding events back until the module is ready, then replaying them in order."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable


class StartupGate:
    """Session events and faults that arrive before the EVSEs are known must not be lost.

    Until :meth:`open`, :meth:`submit` queues work; ``open`` replays the queue in arrival
    order and from then on runs work at once. The gate's lock is held while work runs, so
    an event arriving during the replay waits its turn instead of overtaking older ones.
    Lock order is always gate, then the core's lock; the core never takes this one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[Callable[[], None]] = deque()
        self._open = False

    @property
    def is_open(self) -> bool:
        return self._open

    def submit(self, work: Callable[[], None]) -> None:
        with self._lock:
            if self._open:
                work()
            else:
                self._queue.append(work)

    def open(self) -> int:
        """Replay what was held back; returns how many items were replayed."""
        with self._lock:
            replayed = len(self._queue)
            while self._queue:
                self._queue.popleft()()
            self._open = True
            return replayed
