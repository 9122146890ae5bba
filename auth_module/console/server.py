"""The console's server: Starlette under uvicorn, on a thread with its own event loop.

Everything that touches the console's state runs on that loop. Other threads reach it only
through the feed, which the loop polls every ``POLL_S`` (nothing on the token path wakes
it), and :meth:`Console.stop`.
Updates are coalesced: however many events arrive, the page gets at most one new state per
``PUBLISH_EVERY_S`` (plus one a second for the countdowns), each built once and shared by
every subscriber.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import structlog

from .feed import ConsoleFeed
from .keys import KeyStore, keys_path
from .settings import ConsoleSettings
from .snapshot import take
from .tls import default_paths, ensure_self_signed
from .view import StationView, iso

log = structlog.get_logger("console")

PUBLISH_EVERY_S = 0.25  # at most 4 states a second: ~0.6 ms of CPU each, off the token path
TICK_S = 1.0
POLL_S = 0.1  # the feed is collected this often: a swipe shows within ~0.1-0.35 s


class ConsoleError(Exception):
    """The console cannot start (one line for the log)."""


class Hub:
    """The latest state, and who waits for it. Loop thread only."""

    def __init__(self) -> None:
        self.version = 0
        self.data: bytes = b"{}"
        self.waiters: set[asyncio.Event] = set()
        self.closing = False

    def publish(self, data: bytes) -> None:
        self.version += 1
        self.data = data
        for event in self.waiters:
            event.set()


class Console:
    def __init__(self, module: Any, feed: ConsoleFeed, settings: ConsoleSettings) -> None:
        self.module = module
        self.feed = feed
        self.settings = settings
        station = module.station
        self.station_path = Path(station.base_dir) / Path(station.source).name
        self.keys = KeyStore(keys_path(self.station_path))
        self.editor = self._allow_list_editor()
        self.view = StationView(
            station.logging.show_tokens,
            self.editor.nickname if self.editor is not None else (lambda _v: None),
            self.editor.known if self.editor is not None else (lambda _v: False))
        self.hub = Hub()
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None
        self._publish_at: float | None = None
        self._last_publish = 0.0
        self._last_stable: Any = None

    def _allow_list_editor(self) -> Any:
        from ..plugins.allow_list import AllowListValidator

        for guarded in self.module.validators:
            validator = getattr(guarded, "plugin", guarded)  # the loader's wrapper
            if isinstance(validator, AllowListValidator):
                from .allowlist import AllowListEditor

                return AllowListEditor(validator)
        return None

    # --- lifecycle (module thread) ---------------------------------------------------------

    def start(self, timeout: float = 15.0) -> None:
        """Bind, start serving, and return; raise ConsoleError with the reason if it cannot."""
        sock = self._bind()
        ssl_files = self._tls_files()
        self._thread = threading.Thread(target=self._run, args=(sock, ssl_files),
                                        name="console", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout) or self._failure is not None:
            self.stop()
            raise ConsoleError(f"console did not start: {self._failure or 'timeout'}")
        scheme = "http" if self.settings.allow_http else "https"
        host = self.settings.host
        shown = f"[{host}]" if ":" in host else host
        self.url = f"{scheme}://{shown}:{sock.getsockname()[1]}/"
        log.info("console listening", url=self.url, keys_file=str(self.keys.path))

    def stop(self) -> None:
        loop, server = self._loop, self._server
        if loop is not None and server is not None and not loop.is_closed():
            def close() -> None:
                self.hub.closing = True
                self.hub.publish(self.hub.data)
                server.should_exit = True
                server.force_exit = True  # no waiting for idle keep-alive connections
            try:
                loop.call_soon_threadsafe(close)
            except RuntimeError:
                pass
        if self._thread is not None:
            self._thread.join(5.0)
        self.keys.flush_last_used()

    def _bind(self) -> socket.socket:
        host, port = self.settings.host, self.settings.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(64)
        except OSError as exc:
            sock.close()
            raise ConsoleError(f"console cannot listen on {self.settings.listen}: "
                               f"{exc.strerror or exc}") from None
        sock.setblocking(False)
        return sock

    def _tls_files(self) -> tuple[str, str] | None:
        if self.settings.allow_http:
            return None
        if self.settings.tls is not None:
            station = self.module.station
            cert = station.resolve(self.settings.tls.cert_file)
            key = station.resolve(self.settings.tls.key_file)
        else:
            cert, key = default_paths(self.station_path)
            try:
                if ensure_self_signed(cert, key, self.settings.host):
                    log.info("console: made a self-signed certificate", cert=str(cert))
            except (OSError, subprocess.SubprocessError) as exc:
                raise ConsoleError(f"console: {exc}") from None
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise ConsoleError(f"console.tls: cannot use {cert} / {key}: "
                               f"{getattr(exc, 'strerror', None) or exc}") from None
        return str(cert), str(key)

    # --- the loop (console thread) ---------------------------------------------------------

    def _run(self, sock: socket.socket, ssl_files: tuple[str, str] | None) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(sock, ssl_files))
        except BaseException as exc:  # noqa: BLE001 - reported to start(), never a traceback
            self._failure = exc
            self._started.set()
            if not isinstance(exc, (SystemExit, KeyboardInterrupt)):
                log.error("console stopped", error=repr(exc))
        finally:
            sock.close()
            loop.close()

    async def _serve(self, sock: socket.socket, ssl_files: tuple[str, str] | None) -> None:
        import uvicorn

        _quiet_uvicorn()
        from .app import build_app

        loop = asyncio.get_running_loop()
        config = uvicorn.Config(
            build_app(self), log_config=None, access_log=False, lifespan="off",
            http="h11", ws="none", server_header=False, timeout_graceful_shutdown=1,
            ssl_certfile=ssl_files[0] if ssl_files else None,
            ssl_keyfile=ssl_files[1] if ssl_files else None)
        self._server = server = uvicorn.Server(config)
        self._publish()
        ticker = loop.create_task(self._tick())
        poller = loop.create_task(self._poll())
        startup = loop.create_task(self._mark_started(server))
        try:
            await server.serve(sockets=[sock])
        finally:
            ticker.cancel()
            poller.cancel()
            startup.cancel()

    async def _mark_started(self, server: Any) -> None:
        while not server.started:
            await asyncio.sleep(0.02)
        self._started.set()

    async def _poll(self) -> None:
        """Collect the feed's events on the console's own clock (see ``feed.py`` for why the
        token path does not wake this loop)."""
        while True:
            await asyncio.sleep(POLL_S)
            if self.feed:
                self._on_events()

    async def _tick(self) -> None:
        flushed = time.monotonic()
        while True:
            await asyncio.sleep(TICK_S)
            self._on_events()
            self._publish()
            if time.monotonic() - flushed > 60:
                flushed = time.monotonic()
                await asyncio.get_running_loop().run_in_executor(None, self.keys.flush_last_used)

    def _on_events(self) -> None:
        events = self.feed.drain()
        if events:
            self.view.apply(events)
        if not events and self._publish_at is not None:
            return
        if self._publish_at is None:
            assert self._loop is not None
            delay = max(0.0, self._last_publish + PUBLISH_EVERY_S - time.monotonic())
            self._publish_at = time.monotonic() + delay
            self._loop.call_later(delay, self._publish)

    def _publish(self) -> None:
        self._publish_at = None
        self._last_publish = time.monotonic()
        try:
            self.view.snapshot = take(self.module.handler)
            state = self.station_state()
        except Exception as exc:  # noqa: BLE001 - the console must not die on one bad state
            log.warning("console: state not built", error=repr(exc))
            return
        stable = _without_clocks(state)
        if stable == self._last_stable and self.hub.version:
            return  # only the clocks moved on: the page counts those itself
        self._last_stable = stable
        self.hub.publish(json.dumps(state, separators=(",", ":")).encode())

    def fresh_state(self) -> dict[str, Any]:
        """The state as of now (for ``GET /api/v1/station``; loop thread)."""
        self.view.snapshot = take(self.module.handler)
        return self.station_state()

    def poke(self) -> None:
        """Something changed that the feed does not carry (an allow-list edit): publish soon."""
        self._on_events()

    def demo_swipe(self, value: str) -> None:
        """Demo only: the card reader simulator presents ``value`` (a blocking bus call)."""
        from ..station import BusConnection

        reader = next((e for e in self.module.station.token_providers
                       if isinstance(e, BusConnection)), None)
        if reader is None:
            raise LookupError("no card reader on the bus")
        self.module.bus.call(reader.module_id, "sim", "swipe", {"id_token": value}, timeout=5.0)

    def demo_plug(self, evse_id: int, action: str) -> None:
        """Demo only: the EVSE simulator's car is plugged in or out."""
        managers = self.module.station.evse_managers
        if not 1 <= evse_id <= len(managers):
            raise LookupError(f"no EVSE {evse_id}")
        conn = managers[evse_id - 1]
        self.module.bus.call(conn.module_id, "sim", action, {}, timeout=5.0)

    def station_state(self) -> dict[str, Any]:
        state = self.view.station(time.time())
        state["station"] = {"module_id": self.module.station.module_id,
                            "ready": self.module.ready.is_set(),
                            "demo_controls": self.settings.demo_controls,
                            "allow_list": self.editor is not None}
        state["validators"] = [health(v) for v in self.module.validators]
        state["readers"] = readers(self.module)
        return state


def _without_clocks(state: dict[str, Any]) -> Any:
    """The state minus what changes every second by itself (time in state, countdowns)."""
    evses = [{k: v for k, v in e.items() if k not in ("seconds_in_state", "pending")}
             | {"pending": None if e["pending"] is None else
                {k: v for k, v in e["pending"].items() if k != "remaining_s"}}
             for e in state["evses"]]
    return {**state, "evses": evses}


class _OneLine(logging.Handler):
    """uvicorn's own complaints as one log line each, never a traceback."""

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage().splitlines()[0] if record.getMessage() else record.name
        if record.exc_info and record.exc_info[1] is not None:
            text += f": {type(record.exc_info[1]).__name__}"
        log.warning(f"console: {text}")


def _quiet_uvicorn() -> None:
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers = [_OneLine(level=logging.ERROR)]
        logger.propagate = False


def health(plugin: Any) -> dict[str, Any]:
    """One validator's health, in a form the page shows as it is."""
    name = str(getattr(plugin, "name", type(plugin).__name__))
    plugin = getattr(plugin, "plugin", plugin)  # the loader's wrapper
    out: dict[str, Any] = {"name": name, "kind": name.split(":", 1)[0], "health": "ok"}
    if hasattr(plugin, "ask"):  # a validator module on the bus
        out.update(kind="bus", detail="a module on the bus", health="unknown")
    if hasattr(plugin, "connected"):  # e.g. ocpp16
        out["health"] = "online" if plugin.connected else "offline"
    cache = getattr(plugin, "cache", None)
    if cache is not None:
        try:
            out["cache_size"] = len(cache)
        except TypeError:
            pass
    file = getattr(plugin, "file", None)
    if file is not None and hasattr(file, "tokens"):
        out.update(kind="allow_list", detail=f"{file.path.name}: {len(file.tokens())} cards")
    extra = getattr(plugin, "health", None)
    if callable(extra):
        try:
            got = extra()
            if hasattr(got, "connected"):  # a reader's ReaderHealth (plugins/base.py)
                out.update(kind=str(getattr(got, "kind", out["kind"])),
                           health="connected" if got.connected else "disconnected",
                           detail=str(getattr(got, "detail", "")),
                           since=iso(getattr(got, "since", None)))
            elif isinstance(got, dict):
                out.update(got)
            elif isinstance(got, str):
                out["health"] = got
        except Exception as exc:  # noqa: BLE001 - a plugin's report must not break the page
            out.update(health="unknown", detail=f"health() failed: {type(exc).__name__}")
    return out


def readers(module: Any) -> list[dict[str, Any]]:
    from ..station import BusConnection

    out = [{"name": str(e), "kind": "bus", "health": "unknown", "detail": "a module on the bus"}
           for e in module.station.token_providers if isinstance(e, BusConnection)]
    for provider in module.providers:
        entry = health(provider)
        if entry["health"] == "ok" and not callable(getattr(provider, "health", None)):
            entry["health"] = "running"
        out.append(entry)
    return out
