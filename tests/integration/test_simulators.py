"""The simulators over a real broker, driven by a plain BusClient acting as "auth"."""

from __future__ import annotations

import queue
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from auth_module.bus import BusClient, CommandError
from simulators.evse_manager import EvseManagerSim
from simulators.launcher import start_station
from simulators.token_provider import TokenProviderSim
from simulators.token_provider import main as swipe_main
from simulators.validator import ValidatorSim

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

PREFIX = "everest/"
EVSE_MID = "evse_manager_1"
WAIT = 5.0

TOKEN = {"id_token": {"value": "VALID_RFID_1", "type": "ISO14443"}, "authorization_type": "RFID"}
ACCEPTED = {"authorization_status": "Accepted", "tariff_messages": []}


# --------------------------------------------------------------------------- fixtures

# tests/integration/conftest.py provides a ``broker`` fixture; until it does, use our own.
_CONFTEST = Path(__file__).with_name("conftest.py")
HAVE_SHARED_BROKER = _CONFTEST.is_file() and "def broker(" in _CONFTEST.read_text()

if not HAVE_SHARED_BROKER:

    @pytest.fixture(scope="module")
    def broker() -> Iterator[Any]:
        from simulators.broker import Mosquitto

        with Mosquitto() as b:
            yield b


def _bus(broker: Any, module_id: str) -> BusClient:
    return BusClient(module_id=module_id, host=broker.host, port=broker.port, prefix=PREFIX)


class Auth:
    """A bare BusClient as module "auth", collecting what the EVSE publishes."""

    def __init__(self, broker: Any, evse_mid: str = EVSE_MID, impl: str = "evse") -> None:
        self.bus = _bus(broker, "auth")
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.errors: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.evse_mid = evse_mid
        self.impl = impl
        self.bus.subscribe_var(evse_mid, impl, "session_event", self.events.put)
        self.bus.subscribe_error(
            evse_mid, impl, "evse_manager/Inoperative",
            on_raised=lambda d: self.errors.put(("RaiseError", d)),
            on_cleared=lambda d: self.errors.put(("ClearError", d)),
        )
        self.bus.start()
        assert self.bus.wait_connected(timeout=WAIT)

    def call(self, cmd: str, args: dict[str, Any] | None = None, impl: str | None = None,
             module: str | None = None) -> Any:
        return self.bus.call(module or self.evse_mid, impl or self.impl, cmd, args or {},
                             timeout=WAIT)

    def sim(self, cmd: str, args: dict[str, Any] | None = None) -> Any:
        return self.call(cmd, args, impl="sim")

    def next_event(self, timeout: float = WAIT) -> dict[str, Any]:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no session_event within {timeout} s")

    def wait_event(self, name: str, timeout: float = WAIT) -> tuple[dict[str, Any], list[str]]:
        """Skip events until ``name``; returns it and the names seen before it."""
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"no {name} session_event within {timeout} s (saw {seen})")
            try:
                ev = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if ev["event"] == name:
                return ev, seen
            seen.append(ev["event"])

    def next_error(self, timeout: float = WAIT) -> tuple[str, dict[str, Any]]:
        try:
            return self.errors.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no evse_manager/Inoperative error message within {timeout} s")

    def drain(self) -> list[str]:
        out = []
        while True:
            try:
                out.append(self.events.get_nowait()["event"])
            except queue.Empty:
                return out

    def stop(self) -> None:
        self.bus.stop()


@pytest.fixture
def evse(broker: Any) -> Iterator[EvseManagerSim]:
    sim = EvseManagerSim(lambda mid: _bus(broker, mid), EVSE_MID, evse_id=1)
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def auth(broker: Any, evse: EvseManagerSim) -> Iterator[Auth]:
    a = Auth(broker)
    # subscriptions are live once a round trip through the EVSE has worked
    assert a.call("get_evse")["id"] == 1
    yield a
    a.stop()


def _assert_event_shape(ev: dict[str, Any]) -> None:
    assert ev["uuid"]
    assert ev["timestamp"].endswith("Z") and "T" in ev["timestamp"]
    assert ev["connector_id"] == 1


# --------------------------------------------------------------------------- evse manager


def test_get_evse(auth: Auth) -> None:
    assert auth.call("get_evse") == {"id": 1, "connectors": [{"id": 1, "type": "cType2"}]}


def test_plug_authorize_stop_unplug(auth: Auth, evse: EvseManagerSim) -> None:
    assert auth.sim("plug_in") is True
    ev = auth.next_event()
    assert ev["event"] == "SessionStarted"
    _assert_event_shape(ev)
    assert ev["session_started"]["reason"] == "EVConnected"
    assert "total" in ev["session_started"]["meter_value"]["energy_Wh_import"]
    session_uuid = ev["uuid"]
    st = auth.sim("state")
    assert st["state"] == "plugged" and st["authorized"] is False and st["transaction"] is False

    assert auth.call("authorize_response",
                     {"provided_token": TOKEN, "validation_result": ACCEPTED}) is None
    ev, _ = auth.wait_event("TransactionStarted")
    _assert_event_shape(ev)
    assert ev["uuid"] == session_uuid
    assert ev["transaction_started"]["id_tag"]["id_token"]["value"] == "VALID_RFID_1"
    assert "total" in ev["transaction_started"]["meter_value"]["energy_Wh_import"]
    auth.wait_event("ChargingStarted")
    st = auth.sim("state")
    assert st["state"] == "charging" and st["transaction"] is True

    stop_tag = {**TOKEN, "id_token": {"value": "valid_rfid_1", "type": "ISO14443"}}
    assert auth.call("stop_transaction",
                     {"request": {"reason": "Local", "id_tag": stop_tag}}) is True
    ev, _ = auth.wait_event("TransactionFinished")
    assert ev["transaction_finished"]["reason"] == "Local"
    assert ev["transaction_finished"]["id_tag"]["id_token"]["value"] == "valid_rfid_1"
    assert auth.sim("state")["state"] == "finished"  # the car is still plugged

    # nothing to stop any more
    assert auth.call("stop_transaction", {"request": {"reason": "Remote"}}) is False

    assert auth.sim("plug_out") is True
    ev, _ = auth.wait_event("SessionFinished")
    assert ev["uuid"] == session_uuid
    assert auth.sim("state")["state"] == "idle"
    assert [c for c, _ in evse.received] == [
        "get_evse", "authorize_response", "stop_transaction", "stop_transaction"]
    assert auth.sim("history")[1]["cmd"] == "authorize_response"


def test_authorize_first_then_plug(auth: Auth) -> None:
    auth.call("authorize_response", {"provided_token": TOKEN, "validation_result": ACCEPTED})
    st = auth.sim("state")
    assert st["authorized"] is True and st["transaction"] is False and st["state"] == "authorized"
    auth.sim("plug_in")
    started, seen = auth.wait_event("SessionStarted")
    assert started["session_started"]["reason"] == "EVConnected"
    assert "TransactionStarted" not in seen
    tx, _ = auth.wait_event("TransactionStarted")
    assert tx["transaction_started"]["id_tag"]["id_token"]["value"] == "VALID_RFID_1"
    # pulling the car out ends the transaction, then the session
    auth.sim("plug_out")
    fin, _ = auth.wait_event("TransactionFinished")
    assert fin["transaction_finished"]["reason"] == "EVDisconnected"
    auth.wait_event("SessionFinished")


def test_rejected_authorization_does_nothing(auth: Auth) -> None:
    auth.sim("plug_in")
    auth.wait_event("SessionStarted")
    auth.call("authorize_response", {"provided_token": TOKEN,
                                     "validation_result": {"authorization_status": "Invalid",
                                                           "tariff_messages": []}})
    st = auth.sim("state")
    assert st["state"] == "plugged" and st["transaction"] is False
    assert "TransactionStarted" not in auth.drain()


def test_withdraw_authorization(auth: Auth) -> None:
    auth.call("authorize_response", {"provided_token": TOKEN, "validation_result": ACCEPTED})
    assert auth.sim("state")["authorized"] is True
    assert auth.call("withdraw_authorization") is None
    auth.wait_event("Deauthorized")
    st = auth.sim("state")
    assert st["authorized"] is False and st["state"] == "idle"
    # plugging in now waits for authorization again
    auth.sim("plug_in")
    auth.wait_event("SessionStarted")
    assert auth.sim("state")["transaction"] is False


def test_fault_and_clear(auth: Auth) -> None:
    assert auth.sim("fault", {"message": "contactor welded"}) is True
    kind, data = auth.next_error()
    assert kind == "RaiseError"
    assert data["type"] == "evse_manager/Inoperative"
    assert data["origin"] == {"module_id": EVSE_MID, "implementation_id": "evse"}
    assert auth.sim("state")["faulted"] is True
    assert auth.call("reserve", {"reservation_id": 7}) is False
    assert auth.sim("clear_fault") is True
    kind, data = auth.next_error()
    assert kind == "ClearError"
    assert data["type"] == "evse_manager/Inoperative"
    assert auth.sim("state")["faulted"] is False


def test_disable_enable(auth: Auth) -> None:
    assert auth.sim("disable") is True
    ev = auth.next_event()
    assert ev["event"] == "Disabled"
    _assert_event_shape(ev)
    assert auth.sim("state")["enabled"] is False
    assert auth.call("reserve", {"reservation_id": 3}) is False
    assert auth.sim("enable") is True
    assert auth.next_event()["event"] == "Enabled"
    assert auth.sim("state")["enabled"] is True


def test_reserve_and_cancel(auth: Auth) -> None:
    assert auth.call("reserve", {"reservation_id": 42}) is True
    ev = auth.next_event()
    assert ev["event"] == "ReservationStart"
    _assert_event_shape(ev)
    assert auth.sim("state")["reserved"] == 42
    assert auth.call("reserve", {"reservation_id": 43}) is False  # already reserved
    assert auth.call("cancel_reservation") is None
    assert auth.next_event()["event"] == "ReservationEnd"
    assert auth.sim("state")["reserved"] is None
    # occupied: a car is plugged in
    auth.sim("plug_in")
    auth.wait_event("SessionStarted")
    assert auth.call("reserve", {"reservation_id": 44}) is False


def test_reservation_id_in_transaction(auth: Auth) -> None:
    assert auth.call("reserve", {"reservation_id": 9}) is True
    auth.wait_event("ReservationStart")
    auth.sim("plug_in")
    auth.call("authorize_response", {"provided_token": TOKEN, "validation_result": ACCEPTED})
    ev, _ = auth.wait_event("TransactionStarted")
    assert ev["transaction_started"]["reservation_id"] == 9
    assert auth.sim("state")["reserved"] is None


def test_bad_arguments_get_a_command_error(auth: Auth) -> None:
    with pytest.raises(CommandError) as err:
        auth.call("reserve", {"reservation_id": "soon"})
    assert err.value.event == "SchemaValidationError"
    with pytest.raises(CommandError) as err:
        auth.call("stop_transaction", {"request": {"reason": "Bored"}})
    assert err.value.event == "SchemaValidationError"


# --------------------------------------------------------------------------- validator

TOKENS_YAML = """\
tokens:
  - id_token: VALID_RFID_1
  - id_token: BLOCKED_1
    status: Blocked
  - id_token: OLD_1
    expiry: 2020-01-01T00:00:00Z
  - id_token: FUTURE_1
    expiry: 2999-01-01T00:00:00Z
  - id_token: CHILD_1
    parent_id_token: PARENT_RFID
    evse_ids: [1, 2]
"""


@pytest.fixture
def validator_file(tmp_path: Any) -> Any:
    p = tmp_path / "tokens.yaml"
    p.write_text(TOKENS_YAML)
    return p


def _validate(auth_bus: BusClient, value: str, module: str = "validator",
              timeout: float = WAIT) -> Any:
    tok = {"id_token": {"value": value, "type": "ISO14443"}, "authorization_type": "RFID"}
    return auth_bus.call(module, "main", "validate_token", {"provided_token": tok},
                         timeout=timeout)


def test_validator_answers(broker: Any, validator_file: Any) -> None:
    v = ValidatorSim(lambda mid: _bus(broker, mid), tokens_file=validator_file).start()
    a = _bus(broker, "auth")
    a.start()
    try:
        assert a.wait_connected(timeout=WAIT)
        assert _validate(a, "VALID_RFID_1")["authorization_status"] == "Accepted"
        assert _validate(a, "valid_rfid_1")["authorization_status"] == "Accepted"
        assert _validate(a, "nobody")["authorization_status"] == "Invalid"
        assert _validate(a, "blocked_1")["authorization_status"] == "Blocked"
        assert _validate(a, "OLD_1")["authorization_status"] == "Expired"
        fut = _validate(a, "FUTURE_1")
        assert fut["authorization_status"] == "Accepted"
        assert fut["expiry_time"].startswith("2999-01-01T00:00:00")
        child = _validate(a, "Child_1")
        assert child["authorization_status"] == "Accepted"
        assert child["parent_id_token"] == {"value": "PARENT_RFID", "type": "ISO14443"}
        assert child["evse_ids"] == [1, 2]
        assert len(v.received) == 7
    finally:
        a.stop()
        v.stop()


def test_validator_failure_delay_and_silence(broker: Any, validator_file: Any) -> None:
    v = ValidatorSim(lambda mid: _bus(broker, mid), tokens_file=validator_file,
                     fail=True).start()
    a = _bus(broker, "auth")
    a.start()
    try:
        assert a.wait_connected(timeout=WAIT)
        with pytest.raises(CommandError) as err:
            _validate(a, "VALID_RFID_1")
        assert err.value.event == "HandlerException"

        v.fail = False
        v.delay_s = 0.3
        assert _validate(a, "VALID_RFID_1")["authorization_status"] == "Accepted"

        v.delay_s = 0.0
        v.silent = True
        with pytest.raises(Exception) as exc:  # CommandTimeout
            _validate(a, "VALID_RFID_1", timeout=0.5)
        assert type(exc.value).__name__ == "CommandTimeout"
    finally:
        a.stop()
        v.stop()


def test_validator_publishes_update(broker: Any, validator_file: Any) -> None:
    got: queue.Queue[Any] = queue.Queue()
    a = _bus(broker, "auth")
    a.subscribe_var("validator", "main", "validate_result_update", got.put)
    a.start()
    v = ValidatorSim(lambda mid: _bus(broker, mid), tokens_file=validator_file).start()
    try:
        assert a.wait_connected(timeout=WAIT)
        _validate(a, "VALID_RFID_1")  # a round trip: the subscription is live
        v.publish_update(2, {"authorization_status": "Blocked"})
        msg = got.get(timeout=WAIT)
        assert msg == {"validation_result": {"authorization_status": "Blocked",
                                             "tariff_messages": []},
                       "connector_id": 2}
    finally:
        a.stop()
        v.stop()


# --------------------------------------------------------------------------- provider & launcher


def test_token_provider_swipe(broker: Any) -> None:
    got: queue.Queue[Any] = queue.Queue()
    a = _bus(broker, "auth")
    a.subscribe_var("rfid_reader", "main", "provided_token", got.put)
    a.start()
    p = TokenProviderSim(lambda mid: _bus(broker, mid)).start()
    try:
        assert a.wait_connected(timeout=WAIT)
        p.swipe("ABC123", connectors=[2], parent_id_token="PARENT")
        msg = got.get(timeout=WAIT)
        assert msg == {
            "id_token": {"value": "ABC123", "type": "ISO14443"},
            "authorization_type": "RFID",
            "connectors": [2],
            "parent_id_token": {"value": "PARENT", "type": "ISO14443"},
        }
    finally:
        p.stop()
        a.stop()


def _station_file(tmp_path: Any, broker: Any) -> Any:
    station = tmp_path / "station.yaml"
    station.write_text(textwrap.dedent(f"""\
        mqtt:
          host: {broker.host}
          port: {broker.port}
          prefix: {PREFIX}
        module_id: auth
        connections:
          token_provider:
            - module_id: station_reader
              implementation_id: main
          token_validator:
            - plugin: allow_list
              file: tokens.yaml
            - module_id: station_validator
              implementation_id: main
          evse_manager:
            - module_id: station_evse_a
              implementation_id: evse
            - module_id: station_evse_b
              implementation_id: evse
        """))
    (tmp_path / "tokens.yaml").write_text(TOKENS_YAML)
    return station


def test_start_station_and_auth_swipe(broker: Any, tmp_path: Any) -> None:
    station_path = _station_file(tmp_path, broker)
    got: queue.Queue[Any] = queue.Queue()
    a = _bus(broker, "auth")
    a.subscribe_var("station_reader", "main", "provided_token", got.put)
    a.start()
    station = start_station(station_path)
    try:
        assert a.wait_connected(timeout=WAIT)
        assert [e.evse_id for e in station.evses] == [1, 2]
        assert a.call("station_evse_a", "evse", "get_evse", {}, timeout=WAIT)["id"] == 1
        assert a.call("station_evse_b", "evse", "get_evse", {}, timeout=WAIT)["id"] == 2
        assert len(station.validators) == 1
        assert _validate(a, "valid_rfid_1", module="station_validator")[
            "authorization_status"] == "Accepted"
        assert station.provider is not None and station.provider.module_id == "station_reader"

        assert swipe_main(["--config", str(station_path), "SWIPED_1", "--evse", "2"]) == 0
        msg = got.get(timeout=WAIT)
        assert msg["id_token"]["value"] == "SWIPED_1"
        assert msg["connectors"] == [2]
        assert msg["authorization_type"] == "RFID"
    finally:
        station.stop()
        a.stop()


def test_auth_swipe_errors(tmp_path: Any, capsys: Any) -> None:
    missing = tmp_path / "nope.yaml"
    assert swipe_main(["--config", str(missing), "X"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope.yaml" in err
