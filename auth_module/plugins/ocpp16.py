"""``ocpp16``: a validator that asks an OCPP 1.6J central system (CSMS) with ``Authorize``.

The validator is a minimal OCPP 1.6J charge point of its own: it keeps one websocket to
``{csms_url}/{charge_point_id}`` (subprotocol ``ocpp1.6``), sends ``BootNotification`` on
each connection and ``Heartbeat`` at the interval the CSMS asks for, and sends
``Authorize`` for every token it validates. Calls the CSMS makes to it are answered with
the ``NotImplemented`` CALLERROR by the ``ocpp`` package.

Threads. The ``ocpp`` package is asyncio-only, so the validator owns ONE event loop on ONE
daemon thread; ``validate()`` (called from the module's worker threads) hands the
``Authorize`` to that loop with :func:`asyncio.run_coroutine_threadsafe` and waits at most
``timeout_s``. The authorization cache is shared by both sides and guarded by a lock.

Offline answers (CSMS not connected, no answer within ``timeout_s``, a CALLERROR or an
unusable answer) follow OCPP 1.6's ``LocalAuthorizeOffline`` and
``AllowOfflineTxForUnknownId``; see :func:`offline_decision` and
``docs/ocpp16-validator.md``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import structlog
import websockets
from websockets.typing import Subprotocol
from ocpp.exceptions import OCPPError
from ocpp.v16 import ChargePoint as _OcppChargePoint
from ocpp.v16 import call
from ocpp.v16.enums import RegistrationStatus
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..text import one_line
from ..types import AuthorizationStatus, ProvidedIdToken, ValidationResult
from .base import PluginContext
from .loader import register_options_model
from .ocpp16_offline import (  # the validator's offline side, in its own room (re-exported)
    AuthorizationCache,
    IdTagInfo,
    LocalList,
    OptionError,
    _utcnow,
    offline_decision,
    parse_id_tag_info,
)

log = structlog.get_logger("ocpp16")

# The ``ocpp`` package logs every frame it sends and receives at INFO, late answers and
# unparsable frames with their payload at ERROR, and a traceback for each call of the
# CSMS it has no handler for. Frames carry id tags (personal data), and our own log lines
# already tell the connection state and every answer, so the package gets a logger of our
# own that stays silent unless someone sets its level (``auth_module.plugins.ocpp16.wire``).
_WIRE_LOG = logging.getLogger("auth_module.plugins.ocpp16.wire")
if _WIRE_LOG.level == logging.NOTSET:
    _WIRE_LOG.setLevel(logging.CRITICAL)

SUBPROTOCOL = Subprotocol("ocpp1.6")
MAX_ID_TAG_LENGTH = 20  # OCPP 1.6 idTag is a CiString20Type
CHARGE_POINT_VENDOR = "auth-module"
CHARGE_POINT_MODEL = "ocpp16-validator"
FIRST_RECONNECT_DELAY_S = 0.5
MIN_CALL_TIMEOUT_S = 10.0  # BootNotification / Heartbeat wait at least this long
BOOT_RETRY_DEFAULT_S = 10.0  # when a Pending/Rejected boot answer gives interval 0
CLOSE_JOIN_S = 5.0


# --- options ------------------------------------------------------------------------------


@register_options_model
class Ocpp16Options(BaseModel):
    """The plugin's options, as written beside ``plugin: ocpp16`` in the station file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    csms_url: str
    charge_point_id: str = Field(min_length=1, max_length=48)
    timeout_s: float = Field(default=5.0, gt=0, allow_inf_nan=False)
    local_authorize_offline: bool = True
    allow_offline_tx_for_unknown_id: bool = False
    cache_file: str | None = None
    reconnect_max_s: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    local_list: str | None = None

    @field_validator("csms_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("ws", "wss"):
            raise ValueError("must start with ws:// or wss://")
        if not parts.hostname:
            raise ValueError("has no host")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or a fragment")
        return value.rstrip("/")

    @field_validator("charge_point_id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if "/" in value or any(ch.isspace() for ch in value):
            raise ValueError("must not contain '/' or white space")
        return value


# --- the validator --------------------------------------------------------------------------


class _NotConnected(Exception):
    pass


class _ChargePoint(_OcppChargePoint):
    """The ``ocpp`` package's 1.6 charge point; it answers nothing the CSMS asks."""


class Ocpp16Validator:
    """See the module docstring. Build it with :func:`create`."""

    name = "ocpp16"

    def __init__(self, options: Ocpp16Options, context: PluginContext, *,
                 now: Callable[[], datetime] = _utcnow) -> None:
        self.options = options
        self._now = now
        self.url = f"{options.csms_url}/{quote(options.charge_point_id, safe='')}"
        base = Path(context.base_dir)
        cache_path: Path | None = None
        if options.cache_file:
            cache_path = base / options.cache_file
            if not cache_path.parent.is_dir():
                raise OptionError(f"directory {cache_path.parent} does not exist",
                                  option="cache_file")
        # Everything that can fail on the options happens before the thread starts.
        self._local = LocalList(base / options.local_list) if options.local_list else None
        self.cache = AuthorizationCache(now, cache_path)

        self._online = threading.Event()
        self._close_lock = threading.Lock()
        self._closed = False
        self._cp: _ChargePoint | None = None  # loop thread only
        self._inflight: set[asyncio.Task[Any]] = set()  # loop thread only
        self._loop = asyncio.new_event_loop()
        # The ocpp package validates payloads on the loop's default executor: give it one
        # we can shut down without waiting.
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"ocpp16-{options.charge_point_id}-schema")
        self._loop.set_default_executor(self._executor)
        self._main = self._loop.create_task(self._keep_connected())
        self._thread = threading.Thread(target=self._run_loop, daemon=True,
                                        name=f"ocpp16-{options.charge_point_id}")
        self._thread.start()

    # -- caller side ---------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the websocket is open and the CSMS accepted our BootNotification."""
        return self._online.is_set()

    def validate(self, token: ProvidedIdToken) -> ValidationResult:
        id_tag = token.id_token.value
        if len(id_tag) > MAX_ID_TAG_LENGTH:
            log.warning("ocpp16 token longer than an OCPP 1.6 idTag (20); Unknown", token=id_tag)
            return ValidationResult(authorization_status=AuthorizationStatus.Unknown)
        answer = self._ask_csms(id_tag)
        if isinstance(answer, IdTagInfo):
            log.info("ocpp16 csms answer", token=id_tag, status=answer.status.value)
            return answer.to_result()
        return self._offline(id_tag, answer)

    def _ask_csms(self, id_tag: str) -> IdTagInfo | str:
        """The CSMS's idTagInfo, or why there is none. Waits at most ``timeout_s``."""
        timeout = self.options.timeout_s
        if self._closed:
            return "validator closed"
        if not self._online.is_set():
            return "not connected"
        try:
            future = asyncio.run_coroutine_threadsafe(self._authorize(id_tag), self._loop)
        except RuntimeError:  # the loop is closed
            return "not connected"
        try:
            return future.result(timeout=timeout)
        except TimeoutError:
            future.cancel()
            return f"no answer within {timeout:g} s"
        except concurrent.futures.CancelledError:
            return "connection lost"
        except _NotConnected:
            return "not connected"
        except OCPPError as exc:  # a CALLERROR, or an answer that fails the OCPP schema
            return f"{exc.code}: {' '.join(str(exc.description or '').split())}"
        except Exception as exc:
            return f"unusable answer: {(one_line(str(exc)) or type(exc).__name__)}"

    def _offline(self, id_tag: str, reason: str) -> ValidationResult:
        local = self._local.lookup(id_tag) if self._local is not None else None
        result, rule = offline_decision(
            local=local,
            cached=self.cache.lookup(id_tag),
            now=self._now(),
            local_authorize_offline=self.options.local_authorize_offline,
            allow_offline_tx_for_unknown_id=self.options.allow_offline_tx_for_unknown_id,
        )
        log.info("ocpp16 offline answer", token=id_tag, reason=reason, rule=rule,
                 status=result.authorization_status.value)
        return result

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._online.clear()
        try:
            self._loop.call_soon_threadsafe(self._main.cancel)
        except RuntimeError:  # the loop already ended
            pass
        self._thread.join(timeout=CLOSE_JOIN_S)
        if self._thread.is_alive():
            log.warning("ocpp16 event loop did not stop in time", timeout_s=CLOSE_JOIN_S)
        else:
            log.info("ocpp16 closed", url=self.url)

    # -- loop side -----------------------------------------------------------------------

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main)
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # a bug; the validator then answers offline
            log.error("ocpp16 event loop failed", error=repr(exc))
        finally:
            self._online.clear()
            try:
                pending = asyncio.all_tasks(self._loop)
                for task in pending:
                    task.cancel()
                if pending:
                    self._loop.run_until_complete(
                        asyncio.gather(*pending, return_exceptions=True))
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            finally:
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._loop.close()

    async def _authorize(self, id_tag: str) -> IdTagInfo:
        cp = self._cp
        if cp is None or not self._online.is_set():
            raise _NotConnected
        task = asyncio.current_task()
        assert task is not None
        self._inflight.add(task)
        try:
            response = await asyncio.wait_for(
                cp.call(call.Authorize(id_tag=id_tag), suppress=False),
                self.options.timeout_s)
        finally:
            self._inflight.discard(task)
        if response is None:  # cannot happen with suppress=False; be explicit anyway
            raise ValueError("no Authorize.conf payload")
        info = parse_id_tag_info(response.id_tag_info)
        self.cache.update(id_tag, info)
        return info

    async def _keep_connected(self) -> None:
        delay = min(FIRST_RECONNECT_DELAY_S, self.options.reconnect_max_s)
        failures = 0
        log.info("ocpp16 connecting", url=self.url)
        while True:
            try:
                ws = await websockets.connect(self.url, subprotocols=[SUBPROTOCOL],
                                              close_timeout=1)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # refused, DNS, TLS, HTTP status, open timeout, ...
                event = "ocpp16 csms unreachable; retrying"
                fields = {"url": self.url, "error": (one_line(str(exc)) or type(exc).__name__), "retry_in_s": delay}
                if failures == 0 and not self._closed:  # closing: not worth a warning
                    log.warning(event, **fields)
                else:
                    log.debug(event, **fields)
                failures += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.options.reconnect_max_s)
                continue
            failures = 0
            reason = "closed"
            was_online = False
            try:
                if ws.subprotocol != SUBPROTOCOL:
                    reason = f"the csms did not agree to subprotocol {SUBPROTOCOL}"
                else:
                    reason = await self._session(ws)
            finally:
                was_online = self._online.is_set()
                self._online.clear()
                self._cp = None
                for task in list(self._inflight):
                    task.cancel()
                try:
                    await asyncio.wait_for(ws.close(), 2)
                except Exception:  # noqa: S110 - closing a broken socket may fail; it's gone
                    pass
            if was_online:
                delay = min(FIRST_RECONNECT_DELAY_S, self.options.reconnect_max_s)
            log.warning("ocpp16 csms connection lost; reconnecting", url=self.url,
                        reason=reason, retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.options.reconnect_max_s)

    async def _session(self, ws: Any) -> str:
        """Run one connection until it ends; returns why it ended."""
        cp = _ChargePoint(self.options.charge_point_id, ws,
                          response_timeout=max(self.options.timeout_s, MIN_CALL_TIMEOUT_S),
                          logger=_WIRE_LOG)
        reader = asyncio.create_task(cp.start())
        body = asyncio.create_task(self._boot_and_heartbeat(cp))
        try:
            done, _ = await asyncio.wait({reader, body}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, body):
                task.cancel()
            await asyncio.gather(reader, body, return_exceptions=True)
        ended = reader if reader in done else body
        exc = ended.exception()
        return (one_line(str(exc)) or type(exc).__name__) if exc is not None else "closed"

    async def _boot_and_heartbeat(self, cp: _ChargePoint) -> None:
        while True:
            boot = await cp.call(call.BootNotification(
                charge_point_model=CHARGE_POINT_MODEL,
                charge_point_vendor=CHARGE_POINT_VENDOR), suppress=False)
            if boot.status == RegistrationStatus.accepted:
                break
            retry = float(boot.interval) if boot.interval > 0 else BOOT_RETRY_DEFAULT_S
            log.warning("ocpp16 boot notification not accepted; offline until it is",
                        url=self.url, status=str(boot.status), retry_in_s=retry)
            await asyncio.sleep(retry)
        interval = int(boot.interval)
        self._cp = cp
        self._online.set()
        log.info("ocpp16 csms connected", url=self.url, heartbeat_s=interval)
        if interval <= 0:
            await asyncio.Future()  # no heartbeat asked for: run until cancelled
        while True:
            await asyncio.sleep(interval)
            try:
                await cp.call(call.Heartbeat(), suppress=False)
            except (TimeoutError, OCPPError) as exc:
                log.debug("ocpp16 heartbeat failed", url=self.url, error=(one_line(str(exc)) or type(exc).__name__))


def create(options: dict[str, Any], context: PluginContext) -> Ocpp16Validator:
    """The entry point ``ocpp16``: check the options, then connect in the background.

    Bad options raise :class:`pydantic.ValidationError` or :class:`OptionError` (both
    are ValueErrors; the loader turns either into one line naming the option).
    """
    return Ocpp16Validator(Ocpp16Options.model_validate(options), context)


__all__ = [
    "AuthorizationCache",
    "IdTagInfo",
    "LocalList",
    "Ocpp16Options",
    "Ocpp16Validator",
    "OptionError",
    "create",
    "offline_decision",
    "parse_id_tag_info",
]
