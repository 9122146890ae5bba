"""For ``bench.token_latency --console``: the station console on, a browser-like subscriber.

The subscriber does what the console page does: one long ``GET /api/v1/events`` with the
bearer key, over verified HTTPS (the console's self-signed certificate as the trust anchor),
reading every server-sent event as it comes, on its own thread. It counts what it read so
the report can show that the stream was live during the measured tokens.
"""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def console_section(port: int) -> dict[str, Any]:
    return {"listen": f"127.0.0.1:{port}"}


def viewer_key(station_path: Path) -> str:
    from auth_module.console.keys import create_key, keys_path

    return create_key(keys_path(station_path), "bench", "viewer")[0]


class SseSubscriber:
    def __init__(self, port: int, key: str, cert: Path) -> None:
        self.url = f"https://127.0.0.1:{port}/api/v1/events"
        self.key = key
        self.cert = cert
        self.events = 0
        self.bytes = 0
        self.error: str | None = None
        self.first = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sse-subscriber", daemon=True)

    def start(self, timeout: float = 15.0) -> SseSubscriber:
        self._thread.start()
        if not self.first.wait(timeout):
            raise RuntimeError(f"no event from the console within {timeout:g} s: {self.error}")
        return self

    def _run(self) -> None:
        import httpx

        ctx = ssl.create_default_context(cafile=str(self.cert))
        try:
            with httpx.Client(verify=ctx, timeout=httpx.Timeout(10.0, read=None)) as client:
                with client.stream("GET", self.url,
                                   headers={"Authorization": f"Bearer {self.key}"}) as res:
                    if res.status_code != 200:
                        self.error = f"HTTP {res.status_code}"
                        return
                    for line in res.iter_lines():
                        self.bytes += len(line) + 1
                        if line.startswith("event: station"):
                            self.events += 1
                            self.first.set()
                        if self._stop.is_set():
                            return
        except Exception as exc:  # noqa: BLE001 - reported in the bench's result
            if not self._stop.is_set():
                self.error = f"{type(exc).__name__}: {exc}"

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        return {"sse_events": self.events, "sse_bytes": self.bytes, "sse_error": self.error}
