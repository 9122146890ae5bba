"""The ``ocpp16`` validator against a small CSMS on loopback, through a real websocket.

The CSMS is the ``ocpp`` package's own 1.6 ``ChargePoint`` on the server side, served with
``websockets.serve`` on 127.0.0.1, on an asyncio loop of its own thread. It answers
BootNotification, Heartbeat and Authorize (from a dict of tokens) and has switches to
delay its Authorize answers or answer them with a CALLERROR. It can be stopped and started
again on the same port.

No mosquitto needed. Waits for the validator's background connection are polls with a
deadline; time bounds are generous (they are bounds, not speed tests).
"""

from __future__ import annotations

import asyncio
import socket
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import websockets
from ocpp.exceptions import InternalError
from ocpp.routing import on
from ocpp.v16 import ChargePoint as OcppChargePoint
from ocpp.v16 import call_result
from ocpp.v16.enums import Action, RegistrationStatus

from auth_module.plugins.base import PluginContext
from auth_module.plugins.ocpp16 import Ocpp16Validator, create
from auth_module.types import (
    AuthorizationStatus,
    AuthorizationType,
    IdToken,
    IdTokenType,
    ProvidedIdToken,
)

pytestmark = pytest.mark.timeout(30)

CP_ID = "CP001"
MARGIN_S = 2.0  # generous: the bound under test is timeout_s, the margin is for slow CI
WAIT_S = 10.0
FUTURE = "2099-01-01T00:00:00Z"
PAST = "2001-01-01T00:00:00Z"

TOKENS: dict[str, dict[str, Any]] = {
    "ACCEPTED_1": {"status": "Accepted", "expiry_date": FUTURE, "parent_id_tag": "PARENT_1"},
    "ACCEPTED_2": {"status": "Accepted"},
    "BLOCKED_1": {"status": "Blocked"},
    "EXPIRED_1": {"status": "Expired"},
    "INVALID_1": {"status": "Invalid"},
    "BUSY_1": {"status": "ConcurrentTx"},
    "STALE_1": {"status": "Accepted", "expiry_date": PAST},
    "LATE_1": {"status": "Accepted"},
}


# --------------------------------------------------------------------------- the CSMS


class _CsmsSide(OcppChargePoint):
    """One connected charge point, as the CSMS sees it."""

    def __init__(self, cp_id: str, connection: Any, csms: FakeCsms) -> None:
        super().__init__(cp_id, connection)
        self.csms = csms

    @on(Action.boot_notification)
    def on_boot_notification(self, charge_point_vendor: str, charge_point_model: str,
                             **_: Any) -> call_result.BootNotification:
        self.csms.boots.append((self.id, charge_point_vendor, charge_point_model))
        return call_result.BootNotification(
            current_time=datetime.now(UTC).isoformat(), interval=self.csms.heartbeat_s,
            status=self.csms.boot_status)

    @on(Action.heartbeat)
    def on_heartbeat(self) -> call_result.Heartbeat:
        self.csms.heartbeats += 1
        return call_result.Heartbeat(current_time=datetime.now(UTC).isoformat())

    @on(Action.authorize)
    async def on_authorize(self, id_tag: str) -> call_result.Authorize:
        self.csms.authorizes.append(id_tag)
        if self.csms.delay_s:
            await asyncio.sleep(self.csms.delay_s)
        if self.csms.call_error:
            raise InternalError(description="switched to fail")
        info = dict(self.csms.tokens.get(id_tag, {"status": "Invalid"}))
        return call_result.Authorize(id_tag_info=info)


class FakeCsms:
    """A CSMS on 127.0.0.1 with its own event loop thread. Switches: ``delay_s``,
    ``call_error``, ``boot_status``, ``heartbeat_s`` (also the boot retry interval);
    ``tokens`` maps id tag -> idTagInfo (snake_case keys)."""

    def __init__(self, tokens: dict[str, dict[str, Any]] | None = None) -> None:
        self.tokens = dict(TOKENS if tokens is None else tokens)
        self.delay_s = 0.0
        self.call_error = False
        self.heartbeat_s = 300
        self.boot_status = RegistrationStatus.accepted
        self.boots: list[tuple[str, str, str]] = []
        self.paths: list[str] = []
        self.authorizes: list[str] = []
        self.heartbeats = 0
        self.port = 0
        self._server: Any = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="fake-csms")
        self._thread.start()

    def _run(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=timeout)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp"

    async def _handler(self, connection: Any) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        path = connection.request.path
        self.paths.append(path)
        try:
            await _CsmsSide(path.rstrip("/").rsplit("/", 1)[-1], connection, self).start()
        except websockets.ConnectionClosed:
            pass
        finally:
            self._handlers.discard(task)

    async def _start(self, port: int) -> None:
        self._server = await websockets.serve(self._handler, "127.0.0.1", port,
                                              subprotocols=["ocpp1.6"])
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        for task in list(self._handlers):  # a handler may sit in a delayed answer
            task.cancel()
        self._server.close()
        await self._server.wait_closed()
        self._server = None

    def start(self, port: int | None = None) -> FakeCsms:
        """Listen on ``port`` (default: the port of the last run, or a free one)."""
        self._run(self._start(self.port if port is None else port))
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._run(self._stop())

    def shutdown(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def token(value: str) -> ProvidedIdToken:
    return ProvidedIdToken(id_token=IdToken(value=value, type=IdTokenType.ISO14443),
                           authorization_type=AuthorizationType.RFID)


def wait_for(predicate: Callable[[], bool], timeout: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def timed(validator: Ocpp16Validator, value: str) -> tuple[AuthorizationStatus, float, Any]:
    start = time.monotonic()
    result = validator.validate(token(value))
    return result.authorization_status, time.monotonic() - start, result


@pytest.fixture
def csms() -> Iterator[FakeCsms]:
    server = FakeCsms().start(0)
    yield server
    server.shutdown()


@pytest.fixture
def make_validator(tmp_path: Path) -> Iterator[Callable[..., Ocpp16Validator]]:
    made: list[Ocpp16Validator] = []

    def make(url: str, **options: Any) -> Ocpp16Validator:
        opts = {"csms_url": url, "charge_point_id": CP_ID, "timeout_s": 1.0,
                "reconnect_max_s": 0.5, **options}
        validator = create(opts, PluginContext(base_dir=tmp_path))
        made.append(validator)
        return validator

    yield make
    for validator in made:
        validator.close()


# --------------------------------------------------------------------------- online


def test_idtaginfo_mapping_through_a_real_websocket(csms, make_validator):
    v = make_validator(csms.url)
    assert wait_for(lambda: v.connected), "never connected"
    assert csms.paths == [f"/ocpp/{CP_ID}"]
    assert csms.boots == [(CP_ID, "auth-module", "ocpp16-validator")]

    r = v.validate(token("ACCEPTED_1"))
    assert r.authorization_status == AuthorizationStatus.Accepted
    assert r.expiry_time == "2099-01-01T00:00:00.000Z"
    assert r.parent_id_token == IdToken(value="PARENT_1", type=IdTokenType.Central)

    for value, status in [("ACCEPTED_2", AuthorizationStatus.Accepted),
                          ("BLOCKED_1", AuthorizationStatus.Blocked),
                          ("EXPIRED_1", AuthorizationStatus.Expired),
                          ("INVALID_1", AuthorizationStatus.Invalid),
                          ("BUSY_1", AuthorizationStatus.ConcurrentTx),
                          ("NOBODY", AuthorizationStatus.Invalid)]:
        r = v.validate(token(value))
        assert r.authorization_status == status, value
        assert r.parent_id_token is None and r.expiry_time is None
    assert csms.authorizes == ["ACCEPTED_1", "ACCEPTED_2", "BLOCKED_1", "EXPIRED_1",
                               "INVALID_1", "BUSY_1", "NOBODY"]
    # Accepted and rejected answers are cached; ConcurrentTx is not.
    assert v.cache.lookup("accepted_1").status == AuthorizationStatus.Accepted
    assert v.cache.lookup("BLOCKED_1").status == AuthorizationStatus.Blocked
    assert v.cache.lookup("BUSY_1") is None


def test_heartbeat_at_the_interval_the_csms_asks_for(make_validator):
    server = FakeCsms()
    server.heartbeat_s = 1
    server.start(0)
    try:
        make_validator(server.url)
        assert wait_for(lambda: server.heartbeats >= 1, timeout=WAIT_S)
    finally:
        server.shutdown()


def test_offline_until_the_boot_notification_is_accepted(make_validator):
    server = FakeCsms()
    server.boot_status = RegistrationStatus.rejected
    server.heartbeat_s = 1  # the interval after which to boot again
    server.start(0)
    try:
        v = make_validator(server.url, allow_offline_tx_for_unknown_id=True)
        assert wait_for(lambda: len(server.boots) >= 1)
        assert not v.connected
        assert v.validate(token("BLOCKED_1")).authorization_status == \
            AuthorizationStatus.Accepted  # unknown offline, let in by the flag
        assert server.authorizes == []
        server.boot_status = RegistrationStatus.accepted
        assert wait_for(lambda: v.connected)
        assert len(server.boots) >= 2
        assert v.validate(token("BLOCKED_1")).authorization_status == \
            AuthorizationStatus.Blocked
    finally:
        server.shutdown()


def test_token_too_long_for_ocpp16_is_unknown_without_asking(csms, make_validator):
    v = make_validator(csms.url, allow_offline_tx_for_unknown_id=True)
    assert wait_for(lambda: v.connected)
    r = v.validate(token("X" * 21))
    assert r.authorization_status == AuthorizationStatus.Unknown
    assert csms.authorizes == []


# --------------------------------------------------------------------------- slow / failing CSMS


def test_slow_csms_falls_back_within_the_bound(csms, make_validator):
    v = make_validator(csms.url, timeout_s=1.0)
    assert wait_for(lambda: v.connected)
    assert v.validate(token("ACCEPTED_1")).authorization_status == AuthorizationStatus.Accepted

    csms.delay_s = 5.0
    status, took, result = timed(v, "ACCEPTED_1")  # cached: answered from the cache
    assert status == AuthorizationStatus.Accepted
    assert result.parent_id_token is not None and result.parent_id_token.value == "PARENT_1"
    assert took < 1.0 + MARGIN_S

    status, took, _ = timed(v, "ACCEPTED_2")  # never answered before: unknown
    assert status == AuthorizationStatus.Unknown
    assert took < 1.0 + MARGIN_S
    # (the CSMS has not even read that Authorize yet: the ocpp package handles one
    # incoming message at a time, and it is still sitting in the delayed answer)


def test_callerror_falls_back_to_the_cache(csms, make_validator):
    v = make_validator(csms.url)
    assert wait_for(lambda: v.connected)
    assert v.validate(token("ACCEPTED_2")).authorization_status == AuthorizationStatus.Accepted
    csms.call_error = True
    assert v.validate(token("ACCEPTED_2")).authorization_status == AuthorizationStatus.Accepted
    assert v.validate(token("BLOCKED_1")).authorization_status == AuthorizationStatus.Unknown
    assert csms.authorizes.count("ACCEPTED_2") == 2


def test_expiry_date_is_honoured_by_the_cache(csms, make_validator):
    v = make_validator(csms.url)
    assert wait_for(lambda: v.connected)
    # Online the CSMS has the last word (expiryDate is for the cache) ...
    assert v.validate(token("STALE_1")).authorization_status == AuthorizationStatus.Accepted
    csms.call_error = True
    # ... offline the cached entry is past its expiry: Expired, not Accepted.
    assert v.validate(token("STALE_1")).authorization_status == AuthorizationStatus.Expired


# --------------------------------------------------------------------------- CSMS down


@pytest.mark.parametrize("allow_unknown", [False, True])
def test_csms_down_at_start_answers_per_flags(make_validator, tmp_path, allow_unknown):
    (tmp_path / "local.yaml").write_text(textwrap.dedent("""\
        tokens:
          - id_token: LOCAL_OK
            evse_ids: [2]
          - id_token: LOCAL_BLOCKED
            status: Blocked
          - id_token: LOCAL_OLD
            expiry: 2001-01-01T00:00:00Z
        """))
    v = make_validator(f"ws://127.0.0.1:{free_port()}/ocpp", timeout_s=3.0,
                       local_list="local.yaml", allow_offline_tx_for_unknown_id=allow_unknown)
    status, took, _ = timed(v, "NOBODY")
    assert status == (AuthorizationStatus.Accepted if allow_unknown
                      else AuthorizationStatus.Unknown)
    assert took < 3.0 + MARGIN_S
    status, _, result = timed(v, "local_ok")
    assert status == AuthorizationStatus.Accepted and result.evse_ids == [2]
    assert timed(v, "LOCAL_BLOCKED")[0] == AuthorizationStatus.Blocked
    assert timed(v, "LOCAL_OLD")[0] == AuthorizationStatus.Expired
    assert not v.connected


def test_local_authorize_offline_false_ignores_the_local_list(make_validator, tmp_path):
    (tmp_path / "local.yaml").write_text("tokens:\n  - id_token: LOCAL_OK\n")
    v = make_validator(f"ws://127.0.0.1:{free_port()}/ocpp", local_list="local.yaml",
                       local_authorize_offline=False)
    assert v.validate(token("LOCAL_OK")).authorization_status == AuthorizationStatus.Unknown


def test_csms_down_at_start_then_up(make_validator):
    port = free_port()
    v = make_validator(f"ws://127.0.0.1:{port}/ocpp")
    assert v.validate(token("ACCEPTED_2")).authorization_status == AuthorizationStatus.Unknown
    server = FakeCsms().start(port)
    try:
        assert wait_for(lambda: v.connected), "did not connect once the CSMS came up"
        assert v.validate(token("ACCEPTED_2")).authorization_status == \
            AuthorizationStatus.Accepted
    finally:
        v.close()
        server.shutdown()


@pytest.mark.parametrize("allow_unknown", [False, True])
def test_csms_goes_down_and_comes_back(csms, make_validator, allow_unknown):
    v = make_validator(csms.url, allow_offline_tx_for_unknown_id=allow_unknown)
    assert wait_for(lambda: v.connected)
    assert v.validate(token("ACCEPTED_1")).authorization_status == AuthorizationStatus.Accepted
    assert v.validate(token("BLOCKED_1")).authorization_status == AuthorizationStatus.Blocked

    csms.stop()
    assert wait_for(lambda: not v.connected), "did not notice the CSMS going away"
    asked = len(csms.authorizes)
    # cached Accepted: Accepted with its cached idTagInfo
    status, took, result = timed(v, "ACCEPTED_1")
    assert status == AuthorizationStatus.Accepted
    assert result.parent_id_token is not None and result.parent_id_token.value == "PARENT_1"
    assert took < 1.0 + MARGIN_S
    # cached Blocked stays Blocked, even where unknown tokens are let in
    assert v.validate(token("BLOCKED_1")).authorization_status == AuthorizationStatus.Blocked
    # never seen: per AllowOfflineTxForUnknownId
    assert v.validate(token("LATE_1")).authorization_status == (
        AuthorizationStatus.Accepted if allow_unknown else AuthorizationStatus.Unknown)
    assert len(csms.authorizes) == asked  # nobody was asked

    csms.start()  # same port
    assert wait_for(lambda: v.connected), "did not reconnect"
    assert len(csms.boots) == 2
    csms.tokens["LATE_1"] = {"status": "Blocked"}
    assert wait_for(lambda: v.validate(token("LATE_1")).authorization_status
                    == AuthorizationStatus.Blocked)
    assert csms.authorizes[-1] == "LATE_1"


def test_cache_file_keeps_the_cache_across_restarts(csms, make_validator, tmp_path):
    v = make_validator(csms.url, cache_file="ocpp16-cache.json")
    assert wait_for(lambda: v.connected)
    assert v.validate(token("ACCEPTED_1")).authorization_status == AuthorizationStatus.Accepted
    v.close()
    assert (tmp_path / "ocpp16-cache.json").is_file()
    assert "accepted_1" not in (tmp_path / "ocpp16-cache.json").read_text().lower()

    again = make_validator(f"ws://127.0.0.1:{free_port()}/ocpp", cache_file="ocpp16-cache.json")
    r = again.validate(token("ACCEPTED_1"))
    assert r.authorization_status == AuthorizationStatus.Accepted
    assert r.expiry_time == "2099-01-01T00:00:00.000Z"


# --------------------------------------------------------------------------- close


def test_close_returns_promptly_when_connected(csms, make_validator):
    v = make_validator(csms.url)
    assert wait_for(lambda: v.connected)
    start = time.monotonic()
    v.close()
    assert time.monotonic() - start < 3.0
    assert not v._thread.is_alive()
    assert not v.connected
    v.close()  # idempotent
    # after close: offline answers, no wait
    status, took, _ = timed(v, "ACCEPTED_2")
    assert status == AuthorizationStatus.Unknown and took < 1.0


def test_close_returns_promptly_while_reconnecting(make_validator):
    v = make_validator(f"ws://127.0.0.1:{free_port()}/ocpp", reconnect_max_s=30)
    time.sleep(0.2)  # let it fail once and sit in its back-off
    start = time.monotonic()
    v.close()
    assert time.monotonic() - start < 3.0
    assert not v._thread.is_alive()


def test_close_during_a_slow_answer(csms, make_validator):
    v = make_validator(csms.url, timeout_s=5.0)
    assert wait_for(lambda: v.connected)
    csms.delay_s = 10.0
    results: list[AuthorizationStatus] = []
    worker = threading.Thread(target=lambda: results.append(timed(v, "ACCEPTED_2")[0]))
    worker.start()
    assert wait_for(lambda: "ACCEPTED_2" in csms.authorizes)
    start = time.monotonic()
    v.close()
    worker.join(timeout=5.0 + MARGIN_S)
    assert time.monotonic() - start < 3.0 + MARGIN_S
    assert results == [AuthorizationStatus.Unknown]

