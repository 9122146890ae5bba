"""A station with the console on, for the console's API and browser tests.

The rig is the usual one (real mosquitto, simulated EVSE managers, a card reader and a
validator on the bus, the module as its own process) plus an in-process ``allow_list``
validator consulted first, a ``console:`` section on a free loopback port, and keys made
with the real ``auth-module keys create`` command.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any

import httpx
import yaml

from .harness import AUTH_MODULE, Rig, ValidatorSpec, wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_key(station: Path, name: str, role: str, *extra: str) -> str:
    """``auth-module keys create``; the key is alone on the last line of its output."""
    out = subprocess.run([AUTH_MODULE, "keys", "create", "--config", str(station), "--name", name,
                          "--role", role, *extra], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def run_keys(station: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AUTH_MODULE, "keys", args[0], "--config", str(station), *args[1:]],
                          capture_output=True, text=True, timeout=30)


class ConsoleRig(Rig):
    def __init__(self, broker: Any, tmp_path: Path, *, allow_list: bool = True,
                 tokens: list[dict[str, Any]] | None = None, console: dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        kwargs.setdefault("validators", [ValidatorSpec("validator", tokens=[
            {"id_token": "BUS_CARD_1", "status": "Accepted"}], unknown_status="Unknown")])
        kwargs.setdefault("config", {"connection_timeout": 30})
        super().__init__(broker, tmp_path, **kwargs)
        self.port = free_port()
        self.console_section = {"listen": f"127.0.0.1:{self.port}", **(console or {})}
        self.allow_list = allow_list
        self.tokens_path = tmp_path / "tokens.yaml"
        self.tokens_path.write_text(yaml.safe_dump({"tokens": tokens if tokens is not None else [
            {"id_token": "KNOWN_CARD_1", "status": "Accepted", "nickname": "Anna"}]}))

    @property
    def https(self) -> bool:
        return not self.console_section.get("allow_http", False)

    @property
    def url(self) -> str:
        return f"{'https' if self.https else 'http'}://127.0.0.1:{self.port}"

    @property
    def cert_path(self) -> Path:
        return self.tmp_path / "station.console.pem"

    def write_station(self) -> Path:
        super().write_station()
        data = yaml.safe_load(self.station_path.read_text())
        data["logging"]["show_tokens"] = False
        if self.allow_list:
            data["connections"]["token_validator"].insert(
                0, {"plugin": "allow_list", "file": "tokens.yaml", "reload_interval_s": 60})
        data["console"] = self.console_section
        self.station_path.write_text(yaml.safe_dump(data, sort_keys=False))
        return self.station_path

    def start(self) -> ConsoleRig:
        super().start()
        wait_until(self._console_answers, 15.0, "the console to answer")
        return self

    def _console_answers(self) -> bool:
        try:
            self.client().get("/api/v1/me")
            return True
        except httpx.TransportError:
            return False

    def client(self, key: str | None = None, timeout: float = 10.0) -> httpx.Client:
        """An HTTP client that trusts the console's own certificate (verification stays on)."""
        verify: Any = True
        if self.https:
            verify = ssl.create_default_context(cafile=str(self.cert_path))
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, verify=verify, headers=headers, timeout=timeout)

    def key(self, name: str, role: str, *extra: str) -> str:
        return make_key(self.station_path, name, role, *extra)

    def label(self, value: str) -> str:
        """What the module shows for a token (its keyed hash under the station's key)."""
        from auth_module.privacy import TokenPrivacy, load_or_create_key

        key, _ = load_or_create_key(self.tmp_path / "auth-privacy.key")
        return TokenPrivacy(key).label(value)
