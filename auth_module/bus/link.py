"""The broker link's small mechanics: its socket options, its state logged once per change,
and a refusal (credentials, certificate) reported on every attempt."""

from __future__ import annotations

import socket
import threading
from typing import Any, Protocol

from ..broker_access import BrokerAccess
from ..text import exception_line
from .connection import describe_connect_error, is_tcp


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

    def forget(self, state: str) -> None:
        """Take ``state`` as the current one without logging (it was reported otherwise)."""
        with self._lock:
            self._state = state


class Backing(Protocol):
    """What the link's reports change in the connection's retries (NetworkLoop)."""

    def refused(self) -> None: ...

    def away(self) -> None: ...


# CONNACK codes that mean "not these credentials" (MQTT 3.1.1: 4 and 5).
_REFUSED_CREDENTIALS = ("bad user name or password", "not authorized")


class LinkWatch:
    """The link's reports: a state change once (connected, lost, unreachable), and a
    refusal once per attempt, saying which (the credentials, or the broker's certificate),
    never the password and never a traceback (CONTRACT §2.1). A refusal also makes the
    retries slower (``Backing.refused``), a broker that is simply away fast again."""

    def __init__(self, log: Any, access: BrokerAccess) -> None:
        self._log = log
        self._states = LinkLog(log)
        self._access = access
        self._retries: Backing | None = None
        self._awaiting_connack = False  # a socket is open, the broker has not answered yet
        self._refused = False  # this link's CONNACK refused us (reported already)

    def bind(self, retries: Backing) -> None:
        self._retries = retries

    def state(self, state: str, text: str, **kw: Any) -> None:
        self._states.state(state, text, **kw)

    def opened(self, sock: Any) -> None:
        """A socket is open (after the TLS handshake); the CONNECT is on its way."""
        self._awaiting_connack = True
        self._refused = False
        if is_tcp(sock):  # a unix socket has no Nagle to turn off
            set_nodelay(sock, self._log)

    def answered(self, reason: Any) -> bool:
        """The broker's CONNACK: True if it accepted us; a refusal is reported here."""
        self._awaiting_connack = False
        if not reason.is_failure:
            return True
        self._refused = True
        text = str(reason)
        if text.lower() in _REFUSED_CREDENTIALS:
            self._refusal("broker refused the credentials, retrying", user=self._access.username,
                          reason=text)
        else:
            self._refusal("broker refused the connection, retrying", reason=text)
        return False

    def unreachable(self, exc: BaseException) -> None:
        """An attempt failed before a socket was open: down, or its certificate refused."""
        kind, text = describe_connect_error(exc)
        if kind == "unreachable":
            if self._retries is not None:
                self._retries.away()
            self.state("unreachable", "broker unreachable, retrying",
                       broker=self._access.address, reason=text)
        else:
            self._refusal(f"{text}, retrying")

    def closed(self, reason: Any) -> None:
        """The link ended (not by us)."""
        before_connack, self._awaiting_connack = self._awaiting_connack, False
        if self._refused:
            return  # reported by answered()
        if not before_connack:
            self.state("lost", "connection lost", reason=str(reason))
        elif self._access.tls and self._access.cert_file is None:
            # Over TLS 1.3 a broker that requires a client certificate checks it after the
            # handshake and closes the link: that is its refusal.
            self._refusal("broker refused the connection before accepting it (a client "
                          "certificate may be required: mqtt.tls.cert_file), retrying")
        else:  # a broker not there yet (a proxy in front of it accepted the socket)
            self.state("closed", "broker closed the connection before accepting it, retrying",
                       broker=self._access.address)

    def _refusal(self, text: str, **kw: Any) -> None:
        if self._retries is not None:
            self._retries.refused()
        self._states.forget("refused")
        self._log.warning(text, broker=self._access.address, **kw)
