"""A bounded pool for token requests: each token on its own worker thread, never unbounded.

Validation may take seconds (a remote CSMS), so tokens must not be handled on the MQTT
network thread. But a flood of swipes (a stuck reader, a replayed bus) must not spawn a
thread each either. The pool runs at most ``workers`` tokens at once and holds at most
``backlog`` more; past that a token is refused at once with a final ``Rejected`` status, so
no token is ever dropped silently.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog

log = structlog.get_logger("tokens")


class BoundedWorkers:
    def __init__(self, workers: int, backlog: int, name: str = "token") -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._slots = threading.BoundedSemaphore(workers + backlog)

    def submit(self, work: Callable[[], Any]) -> bool:
        """Run ``work`` on a worker; False (and nothing run) when the pool is full."""
        if not self._slots.acquire(blocking=False):
            return False

        def run() -> None:
            try:
                work()
            except Exception as exc:  # the work logs its own failures; this is a last guard
                log.error("token worker failed", error=repr(exc))
            finally:
                self._slots.release()

        try:
            self._pool.submit(run)
        except RuntimeError:  # shutting down
            self._slots.release()
            return False
        return True

    def shutdown(self, wait: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)
