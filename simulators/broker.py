"""A private mosquitto for tests, the demo and the benchmark.

Each instance gets its own config, log and port in a temp dir, listens on loopback only,
and can be stopped and started again on the same port to exercise reconnects.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["Mosquitto", "find_mosquitto", "free_port"]

_START_DEADLINE_S = 10.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def find_mosquitto() -> str:
    """Path of the mosquitto binary; /usr/sbin is often not on a user's PATH."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise RuntimeError("mosquitto not found on PATH or in /usr/sbin (apt-get install mosquitto)")
    return found


class Mosquitto:
    """``with Mosquitto() as broker:`` — a broker on ``broker.host:broker.port``."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1", executable: str | None = None,
                 extra_conf: list[str] | None = None) -> None:
        """``extra_conf``: more lines for mosquitto.conf (more listeners, a password file...).

        With extra lines the file starts with ``per_listener_settings true``: the plain
        listener on ``port`` stays open to anonymous clients (simulators, readiness check),
        and each extra listener carries its own ``allow_anonymous``, ``password_file``...
        """
        self.host = host
        self.extra_conf = list(extra_conf or [])
        self.port = port if port is not None else free_port(host)
        self._exe = executable or find_mosquitto()
        self._dir = Path(tempfile.mkdtemp(prefix="mosquitto-"))
        self.conf_path = self._dir / "mosquitto.conf"
        self.log_path = self._dir / "mosquitto.log"
        self._out_path = self._dir / "mosquitto.out"
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_conf()

    def _write_conf(self) -> None:
        lines = ["per_listener_settings true"] if self.extra_conf else []
        lines += [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "set_tcp_nodelay true",
            "persistence false",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # As root, mosquitto 2 switches to user "mosquitto", who cannot write our temp dir.
            lines.append("user root")
        lines += self.extra_conf
        self.conf_path.write_text("\n".join(lines) + "\n")

    @property
    def dir(self) -> Path:
        """The broker's own temp dir (removed by :meth:`close`): a place for its files."""
        return self._dir

    def reconfigure(self, extra_conf: list[str]) -> None:
        """Replace the extra lines (takes effect at the next :meth:`start`)."""
        self.extra_conf = list(extra_conf)
        self._write_conf()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start (again, on the same port) and return once the port accepts connections."""
        if self.running:
            return
        with open(self._out_path, "ab") as out:
            self._proc = subprocess.Popen(
                [self._exe, "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + _START_DEADLINE_S
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited with status {self._proc.returncode} on port {self.port}: {self._tail()}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"mosquitto did not accept connections on {self.host}:{self.port} "
                    f"within {_START_DEADLINE_S:g} s: {self._tail()}"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        """Terminate the broker (clients see the connection drop). Safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def close(self) -> None:
        """Stop and delete the temp dir."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def log_text(self) -> str:
        """The broker's log so far (for failing tests)."""
        parts = []
        for path in (self.log_path, self._out_path):
            try:
                parts.append(path.read_text(errors="replace"))
            except OSError:
                pass
        return "".join(parts)

    def _tail(self, lines: int = 10) -> str:
        text = self.log_text().strip().splitlines()
        return " | ".join(text[-lines:]) or "(no log)"

    def __enter__(self) -> Mosquitto:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Mosquitto({self.host}:{self.port}, running={self.running})"
