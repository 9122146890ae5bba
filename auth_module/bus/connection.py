"""The broker connection's set-up: transport, TLS, credentials, session, and how long to wait
between attempts. paho does the TLS and the unix socket; this only configures it.

Back-off (why these numbers): after a broker that went away comes back, the module must
serve tokens again within 0.5 s (CONTRACT §2.1). An attempt is made, then the wait doubles
from ``FIRST_DELAY_S`` up to a cap; the module is back at most one cap (plus the connect
itself) after the broker is:

- a local broker (unix socket or loopback): cap ``LOCAL_CAP_S`` = 0.25 s. An attempt costs
  one refused ``connect()`` on this machine: nothing.
- a remote broker: cap ``REMOTE_CAP_S`` = 0.4 s, each wait shortened by a random part of up
  to half of it, so that the stations of a site or fleet broker that went away do not all
  come back in the same instant. (A site that prefers fewer attempts over the 0.5 s sets
  ``mqtt.reconnect_max_s``.)
- a broker that answers but refuses our credentials, or whose certificate fails
  verification: cap ``REFUSED_CAP_S`` = 10 s. Retrying faster would not fix a password and
  only loads the broker (and its log); each attempt is still reported in one log line.
"""

from __future__ import annotations

import socket
import ssl
import uuid
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from ..broker_access import BrokerAccess, make_tls_context

__all__ = [
    "BackOff",
    "FIRST_DELAY_S",
    "LOCAL_CAP_S",
    "REFUSED_CAP_S",
    "REMOTE_CAP_S",
    "back_off_for",
    "describe_connect_error",
    "new_paho_client",
]

FIRST_DELAY_S = 0.05
LOCAL_CAP_S = 0.25
REMOTE_CAP_S = 0.4
REFUSED_CAP_S = 10.0


@dataclass(frozen=True, slots=True)
class BackOff:
    """Waits between attempts: ``first`` doubling up to ``cap`` (``refused_cap`` after a
    refusal); each wait is cut by up to ``jitter`` of itself at random."""

    first: float
    cap: float
    refused_cap: float = REFUSED_CAP_S
    jitter: float = 0.0


def back_off_for(access: BrokerAccess) -> BackOff:
    cap_s = access.reconnect_max_s
    if access.local:
        return BackOff(FIRST_DELAY_S, cap_s or LOCAL_CAP_S)
    return BackOff(FIRST_DELAY_S, cap_s or REMOTE_CAP_S, jitter=0.5)


def new_paho_client(module_id: str, access: BrokerAccess, max_inflight: int,
                    max_queued: int) -> mqtt.Client:
    """A paho client set up for ``access``; connect it with ``connect_async(*target(access))``.

    Without a persistent session the client id is unique per process (two processes with
    the same id would kick each other off the broker, forever); with one it is fixed, so
    that the broker recognises us and hands over what it kept.
    """
    persistent = access.persistent_session
    client_id = access.client_id if persistent and access.client_id else \
        f"{module_id}-{uuid.uuid4().hex[:12]}"
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=not persistent,
        protocol=mqtt.MQTTv311,
        transport="unix" if access.socket_path is not None else "tcp",
    )
    client.max_inflight_messages_set(max_inflight)
    client.max_queued_messages_set(max_queued)
    if access.tls:
        client.tls_set_context(make_tls_context(access.ca_file, access.cert_file, access.key_file))
    if access.username is not None:
        client.username_pw_set(access.username, access.password)
    return client


def target(access: BrokerAccess) -> tuple[str, int]:
    """What paho's ``connect_async`` takes: the socket path (port unused) or host and port."""
    if access.socket_path is not None:
        return str(access.socket_path), 1883
    return access.host, access.port


def log_fields(access: BrokerAccess) -> dict[str, object]:
    """What a log line says about the link: the broker, the user (never the password)."""
    fields: dict[str, object] = {"broker": access.address}
    if access.username is not None:
        fields["user"] = access.username
    if access.persistent_session:
        fields["persistent_session"] = access.client_id
    return fields


def is_tcp(sock: object) -> bool:
    """Whether TCP options (TCP_NODELAY) apply to ``sock`` (not to a unix socket)."""
    return getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6)


def describe_connect_error(exc: BaseException) -> tuple[str, str]:
    """(kind, one line) for a failed attempt; kind is ``verification``, ``tls`` or
    ``unreachable``. Never includes anything of the credentials (there is none in these)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or str(exc.reason or exc)
        return "verification", f"broker certificate failed verification: {_flat(detail)}"
    if isinstance(exc, ssl.CertificateError):  # host name checked by ssl.match_hostname
        return "verification", f"broker certificate failed verification: {_flat(str(exc))}"
    if isinstance(exc, ssl.SSLError):
        reason = str(exc.reason or exc).lower().replace("_", " ")
        return "tls", f"TLS handshake failed: {_flat(reason)}"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return "unreachable", _flat(str(text))


def _flat(text: str) -> str:
    return " ".join(text.split())[:200]
