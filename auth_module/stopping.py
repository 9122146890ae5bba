"""A stop signal that can also wake a waiting call, so nothing polls for it."""

from __future__ import annotations

import threading
from collections.abc import Callable


class StopSignal(threading.Event):
    """A ``threading.Event`` whose :meth:`set` also runs the hooks registered with
    :meth:`on_set`.

    ``auth-module`` sets it from its SIGINT/SIGTERM handler; a blocking bus call made during
    start-up registers a hook that ends the call at once (``CallCancelled``) instead of
    checking the flag every few milliseconds. Hooks must be quick and must not block: one
    may run inside a signal handler. The lock is re-entrant for that reason (the handler
    may interrupt a thread that holds it, on the same thread).
    """

    def __init__(self) -> None:
        super().__init__()
        self._hooks: list[Callable[[], None]] = []
        self._hooks_lock = threading.RLock()

    def set(self) -> None:
        super().set()
        with self._hooks_lock:
            hooks, self._hooks = self._hooks, []
        for hook in hooks:
            hook()

    def on_set(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Run ``hook`` when the signal is set (now, if it already is); returns a function
        that unregisters it."""
        with self._hooks_lock:
            if not self.is_set():
                self._hooks.append(hook)
                return lambda: self._forget(hook)
        hook()
        return lambda: None

    def _forget(self, hook: Callable[[], None]) -> None:
        with self._hooks_lock:
            try:
                self._hooks.remove(hook)
            except ValueError:  # already run (or being run) by set()
                pass


def follow(stop: threading.Event) -> StopSignal:
    """``stop`` itself if it is a :class:`StopSignal`; otherwise a signal set when ``stop`` is
    (one daemon thread blocks on ``stop`` meanwhile: it waits, it does not poll)."""
    if isinstance(stop, StopSignal):
        return stop
    signal = StopSignal()

    def follow_it() -> None:
        stop.wait()
        signal.set()

    threading.Thread(target=follow_it, name="stop-follower", daemon=True).start()
    return signal
