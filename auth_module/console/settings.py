"""The ``console:`` section of the station file (CONTRACT.md §9), checked at load time.

Only pydantic here: the station loader imports this for every station, console or not.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator, model_validator


class ConsoleTls(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    cert_file: str
    key_file: str


class ConsoleSettings(BaseModel):
    """Where the console listens and how; every key optional (``console:`` alone is enough)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    listen: str = "127.0.0.1:8443"
    tls: ConsoleTls | None = None
    allow_http: bool = False
    demo_controls: bool = False
    """Show buttons that drive the simulators (swipe a card, plug a car in): the demo only."""

    @field_validator("listen", mode="before")
    @classmethod
    def _listen(cls, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"must be HOST:PORT, e.g. 127.0.0.1:8443 (got {value!r})")
        host, port = split_listen(value)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @model_validator(mode="after")
    def _tls_or_http(self) -> ConsoleSettings:
        if self.allow_http and self.tls is not None:
            raise ValueError("tls and allow_http: true exclude each other; choose one")
        return self

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]


def split_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as (host, port); ValueError with the reason."""
    problem = f"must be HOST:PORT, e.g. 127.0.0.1:8443 (got {text!r})"
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(problem)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(problem) from None
    elif ":" in host or any(c.isspace() for c in host):
        raise ValueError(problem)
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be between 1 and 65535 (got {port})")
    return host, port
