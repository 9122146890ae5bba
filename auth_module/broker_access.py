"""How the module reaches its broker: the ``mqtt`` section of the station file (CONTRACT §2.1).

Two steps, because some checks need the station file's folder:

1. :class:`MqttSettings` is the section as written (pydantic: keys, types, ranges).
2. :func:`resolve_broker` turns it into a :class:`BrokerAccess`: paths made absolute
   (relative to the station file), every file read once, the TLS context built, and the
   combinations that cannot be safe refused. Each problem is a :class:`AccessProblem` with the
   key and one line of text; the station loader adds the file name and exits 2.

Why build the TLS context at start-up: a CA file that is not PEM, or a key that does not
belong to its certificate, would otherwise only show as a failed handshake on every retry,
far from the line of the station file that causes it.

The password is read here, once, and kept only in :class:`BrokerAccess` (never in its
``repr``): it must not reach a log line, an error message or the process's argv.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from .text import show_value

__all__ = [
    "AccessProblem",
    "BrokerAccess",
    "MqttSettings",
    "TlsSettings",
    "is_loopback",
    "make_tls_context",
    "resolve_broker",
]


def _path_text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be a file path (got {show_value(value)})")
    return value.strip()


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TlsSettings(_Section):
    """``mqtt.tls``: the broker's certificate is always verified; these only say against what."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @field_validator("ca_file", "cert_file", "key_file", mode="before")
    @classmethod
    def _paths(cls, value: Any) -> Any:
        return None if value is None else _path_text(value)


_CLIENT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class MqttSettings(_Section):
    host: str = "127.0.0.1"
    port: int = 1883
    prefix: str = "everest/"
    socket_path: str | None = None
    username: str | None = None
    password_file: str | None = None
    tls: TlsSettings | None = None
    allow_insecure: bool = False
    persistent_session: bool = False
    """Fixed client id, clean session off, subscriptions at QoS 1: the broker keeps what is
    published for us while our connection is down (see README, "Persistent session")."""
    client_id: str | None = None
    """The fixed client id of a persistent session; default ``auth-<prefix>-<module_id>``."""
    reconnect_max_s: float | None = None
    """The longest wait between two connection attempts (default 0.25 s for a local broker,
    0.4 s for a remote one: see ``auth_module/bus/connection.py``)."""

    @field_validator("reconnect_max_s", mode="before")
    @classmethod
    def _reconnect_max(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 300:
            raise ValueError(f"must be a number of seconds > 0 and <= 300 (got {show_value(value)})")
        return float(value)

    @field_validator("port", mode="before")
    @classmethod
    def _port(cls, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise ValueError(f"must be an integer between 1 and 65535 (got {show_value(value)})")
        return value

    @field_validator("host", mode="before")
    @classmethod
    def _host(cls, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"must be a host name or address (got {show_value(value)})")
        return value.strip()

    @field_validator("prefix", mode="before")
    @classmethod
    def _prefix(cls, value: Any) -> str:
        if not isinstance(value, str) or any(c in value for c in "+#"):
            raise ValueError(f"must be a topic prefix without '+' or '#' (got {show_value(value)})")
        return value

    @field_validator("socket_path", "password_file", mode="before")
    @classmethod
    def _paths(cls, value: Any) -> Any:
        return None if value is None else _path_text(value)

    @field_validator("username", mode="before")
    @classmethod
    def _username(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, str) or not value or len(value.encode()) > 65535:
            raise ValueError(f"must be a non-empty string (got {show_value(value)})")
        return value

    @field_validator("client_id", mode="before")
    @classmethod
    def _client_id(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, str) or not _CLIENT_ID.match(value):
            raise ValueError("must be 1-64 characters of letters, digits, '_', '.', ':' or '-' "
                             f"(got {show_value(value)})")
        return value

    @model_validator(mode="before")
    @classmethod
    def _empty_tls(cls, data: Any) -> Any:
        """``tls:`` with nothing under it means TLS with the defaults (the system's CAs)."""
        if isinstance(data, dict) and "tls" in data and data["tls"] is None:
            return {**data, "tls": {}}
        return data


class AccessProblem(ValueError):
    """One thing wrong with the ``mqtt`` section: ``key`` (e.g. ``mqtt.tls.ca_file``) and text."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class BrokerAccess:
    """Everything needed to open the broker connection, checked and resolved."""

    host: str = "127.0.0.1"
    port: int = 1883
    socket_path: Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    persistent_session: bool = False
    client_id: str | None = None
    reconnect_max_s: float | None = None
    warnings: tuple[str, ...] = ()
    """Things worth a log line at start (e.g. a password file others can read)."""

    @property
    def local(self) -> bool:
        """A broker on this machine (unix socket or loopback): retrying it costs nothing."""
        return self.socket_path is not None or is_loopback(self.host)

    @property
    def address(self) -> str:
        """For log lines: ``unix:/run/...`` or ``host:port``, with ``tls`` when it is."""
        if self.socket_path is not None:
            return f"unix:{self.socket_path}"
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1 (CONTRACT §2.1: where plain credentials may go)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _readable(path: Path, key: str) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(1 << 20)
    except FileNotFoundError:
        raise AccessProblem(key, f"file not found: {path}") from None
    except IsADirectoryError:
        raise AccessProblem(key, f"is a directory, not a file: {path}") from None
    except PermissionError:
        raise AccessProblem(key, f"cannot read (permission denied): {path}") from None
    except OSError as exc:
        raise AccessProblem(key, f"cannot read: {exc.strerror or exc}: {path}") from None


def _open_to_others(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))
    except OSError:
        return False


def _read_password(path: Path, key: str) -> str:
    raw = _readable(path, key)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise AccessProblem(key, f"not UTF-8 text: {path}") from None
    first = text.splitlines()[0] if text else ""
    if not first:
        raise AccessProblem(key, f"the first line (the password) is empty: {path}")
    return first


def make_tls_context(ca_file: Path | None, cert_file: Path | None,
                     key_file: Path | None) -> ssl.SSLContext:
    """A client context that always verifies the broker: chain and host name, TLS >= 1.2.

    There is deliberately no parameter that turns verification off.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname + CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if cert_file is not None and key_file is not None:
        # An encrypted key would make OpenSSL ask on the terminal: refuse it instead.
        context.load_cert_chain(str(cert_file), str(key_file), password=_no_passphrase)
    return context


def _no_passphrase() -> bytes:
    raise ValueError("an encrypted key_file is not supported (store it unencrypted, mode 0600)")


def _ssl_text(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    text = str(reason or exc).replace("\n", " ").strip()
    return text.lower().replace("_", " ") if reason else text


def resolve_broker(mqtt: MqttSettings, base_dir: Path, module_id: str) -> BrokerAccess:
    """Check the section against the files it names; raise :class:`AccessProblem`."""
    def resolve(value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else base_dir / p

    warnings: list[str] = []
    tls = mqtt.tls
    if mqtt.socket_path is not None and tls is not None:
        raise AccessProblem("mqtt.tls", "cannot be used with mqtt.socket_path "
                                        "(a unix socket is local: there is nothing to encrypt)")
    if mqtt.password_file is not None and mqtt.username is None:
        raise AccessProblem("mqtt.password_file", "needs mqtt.username (MQTT sends a password "
                                                  "only with a user name)")
    ca = cert = key = None
    if tls is not None:
        if tls.key_file is not None and tls.cert_file is None:
            raise AccessProblem("mqtt.tls.key_file", "given without mqtt.tls.cert_file")
        if tls.cert_file is not None and tls.key_file is None:
            raise AccessProblem("mqtt.tls.cert_file", "given without mqtt.tls.key_file")
        if tls.ca_file is not None:
            ca = resolve(tls.ca_file)
            _readable(ca, "mqtt.tls.ca_file")
        if tls.cert_file is not None and tls.key_file is not None:
            cert, key = resolve(tls.cert_file), resolve(tls.key_file)
            _readable(cert, "mqtt.tls.cert_file")
            _readable(key, "mqtt.tls.key_file")
            if _open_to_others(key):
                warnings.append(f"mqtt.tls.key_file {key} can be read by group or others; "
                                "chmod 600 it")
    password = None
    if mqtt.password_file is not None:
        pw_path = resolve(mqtt.password_file)
        password = _read_password(pw_path, "mqtt.password_file")
        if _open_to_others(pw_path):
            warnings.append(f"mqtt.password_file {pw_path} can be read by group or others; "
                            "chmod 600 it")
    if (mqtt.username is not None and tls is None and mqtt.socket_path is None
            and not is_loopback(mqtt.host) and not mqtt.allow_insecure):
        key_name = "mqtt.password_file" if mqtt.password_file is not None else "mqtt.username"
        raise AccessProblem(key_name, f"credentials would go in clear text to {mqtt.host}; "
                                      "add mqtt.tls, or set mqtt.allow_insecure: true")
    if tls is not None:
        _check_context(ca, cert, key)
    client_id = None
    if mqtt.persistent_session:
        client_id = mqtt.client_id or _default_client_id(mqtt.prefix, module_id)
    elif mqtt.client_id is not None:
        raise AccessProblem("mqtt.client_id", "only used with mqtt.persistent_session: true")
    return BrokerAccess(
        host=mqtt.host, port=mqtt.port,
        socket_path=resolve(mqtt.socket_path) if mqtt.socket_path is not None else None,
        username=mqtt.username, password=password, tls=tls is not None,
        ca_file=ca, cert_file=cert, key_file=key,
        persistent_session=mqtt.persistent_session, client_id=client_id,
        reconnect_max_s=mqtt.reconnect_max_s, warnings=tuple(warnings),
    )


def _check_context(ca: Path | None, cert: Path | None, key: Path | None) -> None:
    try:
        make_tls_context(ca, None, None)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise AccessProblem("mqtt.tls.ca_file", f"not a usable CA certificate (PEM): "
                                                f"{_ssl_text(exc)}") from None
    if cert is None or key is None:
        return
    try:
        make_tls_context(ca, cert, key)
    except ValueError as exc:
        raise AccessProblem("mqtt.tls.key_file", str(exc)) from None
    except (ssl.SSLError, OSError) as exc:
        text = _ssl_text(exc)
        which = "mqtt.tls.key_file" if "key" in text else "mqtt.tls.cert_file"
        raise AccessProblem(which, f"certificate and key cannot be used together: {text}") from None


def _default_client_id(prefix: str, module_id: str) -> str:
    """Stable across restarts and different per station on a shared broker (its prefix)."""
    station = re.sub(r"[^A-Za-z0-9_.-]+", "-", prefix).strip("-") or "everest"
    return f"auth-{station}-{module_id}"[:64]

