"""The broker link's small mechanics: its socket options, and its state logged once per change."""

from __future__ import annotations

import socket
import threading
from typing import Any

from ..text import exception_line


def set_nodelay(sock: Any, log: Any) -> None:
    """TCP_NODELAY, or QoS1 request/reply stalls ~40 ms on delayed ACKs."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError) as exc:
        log.debug("TCP_NODELAY not set", error=exception_line(exc))


class LinkLog:
    """Logs the link's state (connected, lost, refused, unreachable) once per change:
    retries every 0.1-5 s must not flood the log."""

    def __init__(self, log: Any) -> None:
        self._log = log
        self._state: str | None = None
        self._lock = threading.Lock()

    def state(self, state: str, text: str, **kw: Any) -> None:
        with self._lock:
            if self._state == state:
                return
            self._state = state
        if state == "connected":
            self._log.info(text, **kw)
        else:
            self._log.warning(text, **kw)
