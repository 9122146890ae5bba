"""EVerest's Auth scenarios (``modules/EVSE/Auth/tests/auth_tests.cpp``) against the running module.

The 47 of the first port and, at the end, those EVerest added since (``docs/everest-parity.md``).

Each test drives ``auth-module --config ...`` as its own process over a real mosquitto,
exactly as the C++ ``AuthTest`` fixture drives ``AuthHandler``:

* fixture: two validators (``validator_a`` answers ``Invalid`` for everything, ``validator_b``
  knows VALID_RFID_1 and VALID_RFID_3 with parent PARENT_RFID and VALID_RFID_2 without),
  EVSE 1 = [cCCS2], EVSE 2 = [sType2, cCCS2], PlugEvents, connection_timeout 1 s, plug-in
  timeout enabled, prioritize_authorization_over_stopping_transaction false;
* ``handle_session_event`` / ``handle_permanent_fault_raised`` -> session events / the
  ``evse_manager/Inoperative`` error published by a scripted EVSE manager;
* ``on_token`` -> a token published by the token provider; ``TokenHandlingResult`` is
  read from the published ``token_validation_status`` sequence;
* ``FakeAuthReceiver`` -> the commands the EVSE managers received (``Rig.authorized``:
  ``authorize_response`` Accepted authorizes, anything else / withdraw / stop deauthorizes),
  cross-checked with the commands as the module sent them, in the module's order;
* setters -> the station config, or the module's bus commands where one exists.

The module never blocks waiting for a car, so EVerest's threads become sequential
publishes. Ordering between a session event and a later token is guaranteed by waiting
until the event has gone through the broker (the observer saw it) before publishing the
token: the broker then delivers both to the module in that order, and the module handles
session events in arrival order on its network thread.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from simulators.broker import Mosquitto

from .harness import DEADLINE_S, EvseTaps, Rig, ValidatorSpec, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

VALID_TOKEN_1 = "VALID_RFID_1"  # same parent id as VALID_TOKEN_3
VALID_TOKEN_2 = "VALID_RFID_2"
VALID_TOKEN_3 = "VALID_RFID_3"  # same parent id as VALID_TOKEN_1
INVALID_TOKEN = "INVALID_RFID"
PARENT_ID_TOKEN = "PARENT_RFID"
CONNECTION_TIMEOUT = 1
QUIET_S = CONNECTION_TIMEOUT + 0.5  # to show a timer-driven status does NOT come

PROCESSING, ACCEPTED, REJECTED = "Processing", "Accepted", "Rejected"
TIMED_OUT, USED_TO_START, USED_TO_STOP, WITHDRAWN = "TimedOut", "UsedToStart", "UsedToStop", "Withdrawn"
USED_TO_REAUTHORIZE = "UsedToReauthorize"

PREFIX = "everest/"
FIXTURE_CONFIG = {
    "selection_algorithm": "PlugEvents",
    "connection_timeout": CONNECTION_TIMEOUT,
    "plug_in_timeout_enabled": True,
    "prioritize_authorization_over_stopping_transaction": False,
}
FIXTURE_EVSES: list[list[tuple[int, str]]] = [[(1, "cCCS2")], [(1, "sType2"), (2, "cCCS2")]]
FIXTURE_TOKENS_B = [
    {"id_token": VALID_TOKEN_1, "parent_id_token": PARENT_ID_TOKEN, "status": "Accepted"},
    {"id_token": VALID_TOKEN_3, "parent_id_token": PARENT_ID_TOKEN, "status": "Accepted"},
    {"id_token": VALID_TOKEN_2, "status": "Accepted"},
]


def fixture_validators(tokens_a: list[dict[str, Any]] | None = None,
                       tokens_b: list[dict[str, Any]] | None = None) -> list[ValidatorSpec]:
    """EVerest's validate callback: result_1 from validator_a, result_2 from validator_b."""
    return [ValidatorSpec("validator_a", tokens=tokens_a or []),
            ValidatorSpec("validator_b", tokens=FIXTURE_TOKENS_B if tokens_b is None else tokens_b)]


def single_connector_evses(count: int) -> list[list[tuple[int, str]]]:
    """The fixture's EVSEs plus ``init_evse(n, n - 1, {Connector(1, sType2)})`` up to ``count``."""
    return FIXTURE_EVSES + [[(1, "sType2")] for _ in range(count - len(FIXTURE_EVSES))]


def id_token(value: str) -> dict[str, str]:
    return {"value": value, "type": "ISO14443"}


def rfc3339(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat(timespec="seconds").replace("+00:00", "Z")


class Station(EvseTaps):
    """A started Rig plus what the C++ fixture can see directly.

    The observer additionally taps the EVSE managers' session events and errors (to know
    they went through the broker) and the commands the module sends them (in the exact
    order the module sent them, independent of the EVSE sims' worker threads).
    """

    def __init__(self, rig: Rig) -> None:
        super().__init__(rig, PREFIX)
        self._reset_at: dict[int, tuple[int, int]] = {}

    # --- acting ----------------------------------------------------------------------------

    def event(self, evse_id: int, name: str, **sub: Any) -> None:
        topic = f"{PREFIX}modules/evse_manager_{evse_id}/impl/evse/var/session_event"
        self._through_broker(topic, lambda: self.rig.evse(evse_id).event(name, **sub))

    def plug_in(self, evse_id: int, reason: str = "EVConnected") -> None:
        self.event(evse_id, "SessionStarted", session_started={
            "reason": reason, "meter_value": {"energy_Wh_import": {"total": 0}}})

    def transaction_started(self, evse_id: int, token: dict[str, Any]) -> None:
        self.event(evse_id, "TransactionStarted", transaction_started={
            "id_tag": token, "meter_value": {"energy_Wh_import": {"total": 0}}})

    def session_finished(self, evse_id: int) -> None:
        self.event(evse_id, "SessionFinished")

    def fault(self, evse_id: int) -> None:
        topic = f"{PREFIX}modules/evse_manager_{evse_id}/impl/evse/error/evse_manager/Inoperative"
        self._through_broker(topic, self.rig.evse(evse_id).fault)

    def swipe(self, value: str, connectors: list[int] | None = None, **kw: Any) -> dict[str, Any]:
        return self.rig.swipe(value, connectors=connectors, **kw)

    def withdraw(self, **request: Any) -> Any:
        return self.rig.call("main", "withdraw_authorization", {"request": request})

    def reserve(self, **request: Any) -> Any:
        return self.rig.call("reservation", "reserve_now", {"request": request})

    def set_master_pass_group_id(self, group_id: str) -> None:
        assert self.rig.call("main", "set_master_pass_group_id",
                             {"master_pass_group_id": group_id}) is None

    def reset_receiver(self) -> None:
        """``FakeAuthReceiver::reset()``: forget every authorization given so far."""
        with self._lock:
            for evse_id in range(1, len(self.rig.evses) + 1):
                self._reset_at[evse_id] = (len(self.sent),
                                           len(self.rig.evse(evse_id).received))

    # --- what the module published --------------------------------------------------------

    def statuses(self, value: str) -> list[str]:
        return self.rig.statuses.of(value)

    def wait_status(self, value: str, status: str, count: int = 1) -> None:
        self.rig.statuses.wait(value, status, count)

    def expect(self, value: str, expected: list[str]) -> None:
        self.rig.statuses.expect(value, expected)

    def only_tokens(self, *values: str) -> None:
        """StrictMock: no status was published for any other token."""
        with self.rig.statuses.lock:
            published = {t for t, _, _ in self.rig.statuses.entries}
        assert published <= set(values), f"unexpected statuses for {published - set(values)}"

    def token_of(self, value: str, status: str, n: int = 0) -> dict[str, Any]:
        return self.rig.statuses.messages(value, status)[n]["token"]

    # --- FakeAuthReceiver ------------------------------------------------------------------

    def sent_to(self, evse_id: int, cmd: str) -> list[dict[str, Any]]:
        """Arguments of every ``cmd`` the module sent to ``evse_id``, in its order."""
        with self._lock:
            start = self._reset_at.get(evse_id, (0, 0))[0]
            return [a for e, c, a in self.sent[start:] if e == evse_id and c == cmd]

    def _sent_authorized(self, evse_id: int) -> bool:
        with self._lock:
            start = self._reset_at.get(evse_id, (0, 0))[0]
            entries = [(c, a) for e, c, a in self.sent[start:] if e == evse_id]
        return _last_word(entries)

    def evse_authorized(self, evse_id: int) -> bool:
        """``Rig.authorized`` (what the EVSE manager received), after any ``reset_receiver``."""
        start = self._reset_at.get(evse_id, (0, 0))[1]
        if start == 0:
            return self.rig.authorized(evse_id)
        return _last_word(list(self.rig.evse(evse_id).received)[start:])

    def expect_authorized(self, expected: dict[int, bool], evse_view: bool = True) -> None:
        """``get_authorization(index)`` for each EVSE: as sent by the module and as received.

        Called once the token's final status is seen, the module's sent commands up to that
        status are all in ``self.sent`` (same observer connection, the module's order).
        """
        def state() -> tuple[dict[int, bool], dict[int, bool]]:
            sent = {e: self._sent_authorized(e) for e in expected}
            got = {e: self.evse_authorized(e) for e in expected} if evse_view else sent
            return sent, got
        try:
            wait_until(lambda: state() == (expected, expected), message="authorization")
        except AssertionError:
            sent, got = state()
            raise AssertionError(f"authorization: expected {expected}, module sent {sent}, "
                                 f"EVSE managers received {got}") from None

    # --- the module's log (markers only) -----------------------------------------------------

    def log_events(self, event: str) -> list[dict[str, Any]]:
        out = []
        for line in self.rig.module_log().splitlines():
            if line.startswith("{"):
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("event") == event:
                    out.append(entry)
        return out

    def wait_already_in_process(self, count: int) -> None:
        """ALREADY_IN_PROCESS publishes nothing; the module's log line is the only marker."""
        wait_until(lambda: len(self.log_events("token presented again while in process")) >= count,
                   message=f"{count} token(s) handled as already in process")


def _last_word(entries: list[tuple[str, dict[str, Any]]]) -> bool:
    state = False
    for cmd, args in entries:
        if cmd == "authorize_response":
            state = args["validation_result"]["authorization_status"] == "Accepted"
        elif cmd in ("withdraw_authorization", "stop_transaction"):
            state = False
    return state


@pytest.fixture
def station(broker: Mosquitto, tmp_path: Path) -> Iterator[Callable[..., Station]]:
    """Start the fixture's station (optionally with other EVSEs, config or validators)."""
    rigs: list[Rig] = []

    def start(evses: list[list[tuple[int, str]]] | None = None,
              config: dict[str, Any] | None = None,
              validators: list[ValidatorSpec] | None = None) -> Station:
        rig = Rig(broker, tmp_path, scripted=True, evses=evses or FIXTURE_EVSES,
                  validators=validators or fixture_validators(),
                  config={**FIXTURE_CONFIG, **(config or {})})
        rigs.append(rig)
        st = Station(rig)
        rig.start()
        return st

    try:
        yield start
    finally:
        for rig in rigs:
            rig.stop()
            print(f"--- module log ({rig.log_path}) ---\n{rig.module_log()[-6000:]}")


# --- authorization and plug-in order ---------------------------------------------------------


def test_simple_authorization(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_simple_authorization: a plugged-in EVSE named by the token is authorized."""
    st = station()
    st.plug_in(1)
    sent = st.swipe(VALID_TOKEN_1, [1])
    expected = {**sent, "parent_id_token": id_token(PARENT_ID_TOKEN)}

    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START])
    assert st.token_of(VALID_TOKEN_1, PROCESSING)["id_token"] == sent["id_token"]
    assert st.token_of(VALID_TOKEN_1, ACCEPTED) == expected
    assert st.token_of(VALID_TOKEN_1, USED_TO_START) == expected
    st.expect_authorized({1: True, 2: False})
    st.only_tokens(VALID_TOKEN_1)


def test_two_referenced_connectors(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_two_referenced_connectors: of two referenced EVSEs the plugged-in one is authorized."""
    st = station()
    st.plug_in(2)
    st.swipe(VALID_TOKEN_1, [1, 2])

    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START])
    st.expect_authorized({1: False, 2: True})
    st.only_tokens(VALID_TOKEN_1)


def test_multiple_referenced_connectors(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_multiple_referenced_connectors: a token waiting for EVSE 1/2 ignores EVSE 3's plug-in and times out."""
    st = station(evses=single_connector_evses(3))
    token1 = st.swipe(VALID_TOKEN_1, [1, 2])
    st.wait_status(VALID_TOKEN_1, ACCEPTED)  # t1 is waiting in select_evse

    token2 = st.swipe(VALID_TOKEN_2, [3])
    st.plug_in(3)
    st.expect(VALID_TOKEN_2, [PROCESSING, ACCEPTED, USED_TO_START])
    st.expect_authorized({1: False, 2: False, 3: True})

    st.transaction_started(3, token2)
    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, TIMED_OUT])  # result1 == TIMEOUT
    assert st.token_of(VALID_TOKEN_1, TIMED_OUT)["id_token"] == token1["id_token"]
    st.expect(VALID_TOKEN_2, [PROCESSING, ACCEPTED, USED_TO_START])
    assert st.statuses(VALID_TOKEN_2) == [PROCESSING, ACCEPTED, USED_TO_START]
    st.expect_authorized({1: False, 2: False, 3: True})
    st.only_tokens(VALID_TOKEN_1, VALID_TOKEN_2)


def test_multiple_authorization_requests(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_multiple_authorization_requests: three waiting tokens, one plug-in: one starts, two time out."""
    st = station(evses=single_connector_evses(6))
    st.swipe(VALID_TOKEN_1, [1, 2])
    st.swipe(VALID_TOKEN_2, [3, 4])
    token3 = st.swipe(VALID_TOKEN_3, [5, 6])
    for value in (VALID_TOKEN_1, VALID_TOKEN_2, VALID_TOKEN_3):
        st.wait_status(value, ACCEPTED)  # all three wait for a plug-in

    st.plug_in(6)
    st.expect(VALID_TOKEN_3, [PROCESSING, ACCEPTED, USED_TO_START])
    started = time.monotonic()
    st.transaction_started(6, token3)
    st.expect_authorized({6: True})

    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, TIMED_OUT])
    st.expect(VALID_TOKEN_2, [PROCESSING, ACCEPTED, TIMED_OUT])
    # TimedOut for token 3: Times(0). Its authorization timer would have fired by now.
    time.sleep(max(0.0, started + QUIET_S - time.monotonic()))
    assert st.statuses(VALID_TOKEN_3) == [PROCESSING, ACCEPTED, USED_TO_START]
    st.expect_authorized({1: False, 2: False, 3: False, 4: False, 5: False, 6: True})
    st.only_tokens(VALID_TOKEN_1, VALID_TOKEN_2, VALID_TOKEN_3)


def test_stop_transaction(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_stop_transaction: the same card swiped again during its transaction stops it."""
    st = station()
    st.plug_in(1)
    token = st.swipe(VALID_TOKEN_1, [1])
    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START])
    st.expect_authorized({1: True, 2: False})

    st.transaction_started(1, token)
    st.swipe(VALID_TOKEN_1, [1])  # second swipe to finish the transaction

    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START, PROCESSING, USED_TO_STOP])
    st.expect_authorized({1: False, 2: False})
    assert len(st.sent_to(1, "stop_transaction")) == 1
    assert st.sent_to(2, "stop_transaction") == []
    st.only_tokens(VALID_TOKEN_1)


def test_authorize_first(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_authorize_first: swipe first, then the plug-in picks the EVSE."""
    st = station()
    st.swipe(VALID_TOKEN_1, [1, 2])
    st.wait_status(VALID_TOKEN_1, ACCEPTED)
    st.plug_in(1)

    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START])
    st.expect_authorized({1: True, 2: False})
    st.only_tokens(VALID_TOKEN_1)


def test_swipe_multiple_times_with_timeout(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_swipe_multiple_times_with_timeout: of four swipes one times out, three are already in process; a re-swipe starts."""
    st = station()
    for _ in range(4):  # EVerest: four concurrent on_token threads
        st.swipe(VALID_TOKEN_1, [1, 2])
    st.wait_already_in_process(3)

    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, TIMED_OUT])  # 1x TIMEOUT, 3x ALREADY_IN_PROCESS
    st.expect_authorized({1: False, 2: False})

    st.swipe(VALID_TOKEN_1, [1, 2])
    st.wait_status(VALID_TOKEN_1, ACCEPTED, count=2)
    st.plug_in(2)

    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, TIMED_OUT, PROCESSING, ACCEPTED, USED_TO_START])
    st.expect_authorized({1: False, 2: True})
    st.only_tokens(VALID_TOKEN_1)


def test_two_id_tokens(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_two_id_tokens: two waiting cards are used for two plug-ins."""
    st = station()
    st.swipe(VALID_TOKEN_1, [1, 2])
    st.swipe(VALID_TOKEN_2, [1, 2])
    st.wait_status(VALID_TOKEN_1, ACCEPTED)
    st.wait_status(VALID_TOKEN_2, ACCEPTED)
    st.plug_in(1)
    st.plug_in(2)

    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START])
    st.expect(VALID_TOKEN_2, [PROCESSING, ACCEPTED, USED_TO_START])
    st.expect_authorized({1: True, 2: True})
    st.only_tokens(VALID_TOKEN_1, VALID_TOKEN_2)


def test_two_plugins(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_two_plugins: two plug-ins, then two swipes, give two authorizations."""
    st = station()
    st.plug_in(1)
    st.plug_in(2)
    st.swipe(VALID_TOKEN_1, [1, 2])
    st.swipe(VALID_TOKEN_2, [1, 2])

    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START])
    st.expect(VALID_TOKEN_2, [PROCESSING, ACCEPTED, USED_TO_START])
    st.expect_authorized({1: True, 2: True})
    st.only_tokens(VALID_TOKEN_1, VALID_TOKEN_2)


def test_authorization_after_plug_in_and_plug_out(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_authorization_after_plug_in_and_plug_out: a plug-in undone by a plug-out does not count."""
    st = station()
    st.plug_in(1)
    st.session_finished(1)
    st.swipe(VALID_TOKEN_1, [1, 2])
    st.wait_status(VALID_TOKEN_1, ACCEPTED)
    st.plug_in(2)

    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START])
    st.expect_authorized({1: False, 2: True})
    st.only_tokens(VALID_TOKEN_1)


def test_two_plugins_with_invalid_rfid(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_two_plugins_with_invalid_rfid: after two plug-ins a valid card starts, an invalid one is rejected."""
    st = station()
    st.plug_in(1)
    st.plug_in(2)
    st.swipe(VALID_TOKEN_1, [1, 2])
    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START])
    st.expect_authorized({1: True})

    st.swipe(INVALID_TOKEN, [1, 2])
    st.expect(INVALID_TOKEN, [PROCESSING, REJECTED])
    st.expect_authorized({2: False})
    st.only_tokens(VALID_TOKEN_1, INVALID_TOKEN)


def test_faulted_state(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_faulted_state: faulted EVSEs get no authorization."""
    st = station()
    st.fault(1)  # EVerest: connector (1, 1)
    st.fault(2)  # EVerest: connectors (2, 1) and (2, 2)
    st.swipe(VALID_TOKEN_1, [1, 2])
    st.swipe(VALID_TOKEN_2, [1, 2])

    st.expect(VALID_TOKEN_1, [PROCESSING, REJECTED])  # NO_CONNECTOR_AVAILABLE
    st.expect(VALID_TOKEN_2, [PROCESSING, REJECTED])
    st.expect_authorized({1: False, 2: False})
    st.only_tokens(VALID_TOKEN_1, VALID_TOKEN_2)


def _used_evse(st: Station, value: str) -> int:
    [evse_id] = st.token_of(value, USED_TO_START)["connectors"]
    return int(evse_id)


def test_transaction_finish(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_transaction_finish: two transactions are each stopped by a second swipe of their card."""
    st = station()
    st.plug_in(1)
    st.plug_in(2)
    token1 = st.swipe(VALID_TOKEN_1, [1, 2])
    token2 = st.swipe(VALID_TOKEN_2, [1, 2])
    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START])
    st.expect(VALID_TOKEN_2, [PROCESSING, ACCEPTED, USED_TO_START])
    st.transaction_started(_used_evse(st, VALID_TOKEN_1), token1)
    st.transaction_started(_used_evse(st, VALID_TOKEN_2), token2)
    st.expect_authorized({1: True, 2: True})

    st.swipe(VALID_TOKEN_1, [1, 2])
    st.swipe(VALID_TOKEN_2, [1, 2])

    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START, PROCESSING, USED_TO_STOP])
    st.expect(VALID_TOKEN_2, [PROCESSING, ACCEPTED, USED_TO_START, PROCESSING, USED_TO_STOP])
    st.expect_authorized({1: False, 2: False})
    st.only_tokens(VALID_TOKEN_1, VALID_TOKEN_2)


# --- parent id tokens ---------------------------------------------------------------------------


def test_parent_id_finish(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_parent_id_finish: with prioritize=false a card of the same group stops the transaction."""
    st = station()
    st.plug_in(1)
    token1 = st.swipe(VALID_TOKEN_1, [1, 2])
    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START])
    st.transaction_started(1, token1)
    st.expect_authorized({1: True, 2: False})

    st.swipe(VALID_TOKEN_3, [1, 2])  # to finish the transaction

    st.expect(VALID_TOKEN_3, [PROCESSING, USED_TO_STOP])
    st.expect_authorized({1: False, 2: False})
    stop_token = st.token_of(VALID_TOKEN_3, USED_TO_STOP)
    assert stop_token["parent_id_token"]["value"] == PARENT_ID_TOKEN
    assert stop_token["connectors"] == [1]
    [stop] = st.sent_to(1, "stop_transaction")
    assert stop["request"]["reason"] == "Local"
    st.only_tokens(VALID_TOKEN_1, VALID_TOKEN_3)


def test_parent_id_no_finish(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_parent_id_no_finish: with prioritize=true a card of the same group authorizes EVSE 2 instead."""
    st = station(config={"prioritize_authorization_over_stopping_transaction": True})
    st.plug_in(1)
    st.swipe(VALID_TOKEN_1, [1, 2])
    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START])
    st.expect_authorized({1: True, 2: False})

    st.swipe(VALID_TOKEN_3, [1, 2])
    st.plug_in(2)

    st.expect(VALID_TOKEN_3, [PROCESSING, ACCEPTED, USED_TO_START])
    st.expect_authorized({1: True, 2: True})
    assert st.sent_to(1, "stop_transaction") == [] and st.sent_to(2, "stop_transaction") == []
    st.only_tokens(VALID_TOKEN_1, VALID_TOKEN_3)


def test_parent_id_finish_because_no_available_connector(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_parent_id_finish_because_no_available_connector: prioritize=true, EVSE 2 faulted: the group card stops."""
    st = station(config={"prioritize_authorization_over_stopping_transaction": True})
    st.plug_in(1)
    st.fault(2)  # EVerest: connectors (2, 1) and (2, 2)
    token1 = st.swipe(VALID_TOKEN_1, [1, 2])
    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START])
    st.transaction_started(1, token1)
    st.expect_authorized({1: True, 2: False})

    st.swipe(VALID_TOKEN_3, [1, 2])  # no EVSE available: this finishes the transaction

    st.expect(VALID_TOKEN_3, [PROCESSING, USED_TO_STOP])
    st.expect_authorized({1: False, 2: False})
    assert len(st.sent_to(1, "stop_transaction")) == 1
    st.only_tokens(VALID_TOKEN_1, VALID_TOKEN_3)


def test_parent_id_finish_because_no_available_connector_2(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_parent_id_finish_because_no_available_connector_2: as before with EVSE 1 faulted, transaction on EVSE 2."""
    st = station(config={"prioritize_authorization_over_stopping_transaction": True})
    st.plug_in(2)
    st.fault(1)  # EVerest: connector (1, 1)
    token1 = st.swipe(VALID_TOKEN_1, [1, 2])
    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START])
    st.transaction_started(2, token1)
    st.expect_authorized({1: False, 2: True})

    st.swipe(VALID_TOKEN_3, [1, 2])

    st.expect(VALID_TOKEN_3, [PROCESSING, USED_TO_STOP])
    st.expect_authorized({1: False, 2: False})
    assert len(st.sent_to(2, "stop_transaction")) == 1
    assert st.sent_to(1, "stop_transaction") == []
    st.only_tokens(VALID_TOKEN_1, VALID_TOKEN_3)


# --- reservations ---------------------------------------------------------------------------


def test_reservation(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_reservation: a reservation for EVSE 1 expiring in an hour is accepted."""
    st = station()
    result = st.reserve(evse_id=1, id_token=VALID_TOKEN_1, reservation_id=1,
                        connector_type="cCCS2", expiry_time=rfc3339(timedelta(hours=1)))
    assert result == "Accepted"


def test_reservation_in_past(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_reservation_in_past: a reservation whose expiry time has passed is rejected."""
    st = station()
    result = st.reserve(evse_id=1, id_token=VALID_TOKEN_1, reservation_id=1,
                        connector_type="cCCS2", expiry_time=rfc3339(-timedelta(hours=1)))
    assert result == "Rejected"


def test_reservation_with_authorization(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_reservation_with_authorization: on a reserved EVSE another card is rejected, the reserving card starts."""
    st = station()
    assert st.reserve(evse_id=1, id_token=VALID_TOKEN_2, reservation_id=1, connector_type="cCCS2",
                      expiry_time=rfc3339(timedelta(hours=1))) == "Accepted"
    st.event(1, "ReservationStart")
    st.plug_in(1)

    st.swipe(VALID_TOKEN_1, [1, 2])  # not valid for the reservation
    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, REJECTED])
    st.expect_authorized({1: False, 2: False})

    st.swipe(VALID_TOKEN_2, [1, 2])  # valid for the reservation
    st.expect(VALID_TOKEN_2, [PROCESSING, ACCEPTED, USED_TO_START])
    st.expect_authorized({1: True, 2: False})
    assert st.sent_to(1, "authorize_response")[-1]["validation_result"].get("reservation_id") == 1
    st.only_tokens(VALID_TOKEN_1, VALID_TOKEN_2)


def test_reservation_with_authorization_global_reservations(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_reservation_with_authorization_global_reservations: a station-wide sType2 reservation keeps the only sType2 EVSE from another card."""
    st = station()
    assert st.reserve(id_token=VALID_TOKEN_2, reservation_id=1, connector_type="sType2",
                      expiry_time=rfc3339(timedelta(hours=1))) == "Accepted"
    st.event(2, "ReservationStart")

    st.swipe(VALID_TOKEN_1, [1, 2])
    st.wait_status(VALID_TOKEN_1, ACCEPTED)
    st.plug_in(2)

    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, REJECTED])
    st.expect_authorized({1: False, 2: False})
    st.only_tokens(VALID_TOKEN_1)


def test_reservation_with_authorization_global_reservations_2(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_reservation_with_authorization_global_reservations_2: two station-wide reservations, two EVSEs: a third card finds none."""
    st = station()
    expiry = rfc3339(timedelta(hours=1))
    assert st.reserve(id_token=VALID_TOKEN_2, reservation_id=1, connector_type="cCCS2",
                      expiry_time=expiry) == "Accepted"
    assert st.reserve(id_token=VALID_TOKEN_1, reservation_id=2, connector_type="cCCS2",
                      expiry_time=expiry) == "Accepted"
    st.event(2, "ReservationStart")

    st.swipe(VALID_TOKEN_3, [1, 2])
    st.plug_in(2, reason="Authorized")

    st.expect(VALID_TOKEN_3, [PROCESSING, REJECTED])  # NO_CONNECTOR_AVAILABLE
    st.expect_authorized({1: False, 2: False})
    st.only_tokens(VALID_TOKEN_3)


def test_complete_event_flow(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_complete_event_flow: a full session, then a new one on the same EVSE is authorized again."""
    st = station()
    st.plug_in(1)
    token = st.swipe(VALID_TOKEN_1, [1])
    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START])
    st.expect_authorized({1: True, 2: False})

    st.transaction_started(1, token)
    st.event(1, "ChargingPausedEV")
    st.event(1, "ChargingStarted")
    st.event(1, "TransactionFinished", transaction_finished={
        "meter_value": {"energy_Wh_import": {"total": 1000}}, "id_tag": token})
    st.session_finished(1)
    st.reset_receiver()

    st.plug_in(1)
    st.swipe(VALID_TOKEN_1, [1])

    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START, PROCESSING, ACCEPTED, USED_TO_START])
    st.expect_authorized({1: True, 2: False})
    st.only_tokens(VALID_TOKEN_1)


def test_reservation_with_parent_id_tag(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_reservation_with_parent_id_tag: an unreserved card is rejected, a card with the reservation's parent id starts."""
    st = station()
    assert st.reserve(evse_id=1, id_token=VALID_TOKEN_1, reservation_id=1,
                      parent_id_token=PARENT_ID_TOKEN,
                      expiry_time=rfc3339(timedelta(hours=1))) == "Accepted"
    st.event(1, "ReservationStart")
    st.plug_in(1)

    st.swipe(VALID_TOKEN_2, [1, 2])  # not valid for the reservation
    st.expect(VALID_TOKEN_2, [PROCESSING, ACCEPTED, REJECTED])
    st.expect_authorized({1: False, 2: False})

    st.swipe(VALID_TOKEN_3, [1, 2])  # valid: the parent id tokens match
    st.expect(VALID_TOKEN_3, [PROCESSING, ACCEPTED, USED_TO_START])
    st.expect_authorized({1: True, 2: False})
    st.only_tokens(VALID_TOKEN_2, VALID_TOKEN_3)


# --- timeouts ---------------------------------------------------------------------------------


def test_authorization_timeout_and_reswipe(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_authorization_timeout_and_reswipe: a token with no plug-in times out; the next swipe plus plug-in starts."""
    st = station()
    st.swipe(VALID_TOKEN_1, [1, 2])
    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, TIMED_OUT])  # result == TIMEOUT
    st.expect_authorized({1: False})

    st.swipe(VALID_TOKEN_1, [1, 2])
    st.wait_status(VALID_TOKEN_1, ACCEPTED, count=2)
    st.plug_in(1)

    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, TIMED_OUT, PROCESSING, ACCEPTED, USED_TO_START])
    st.expect_authorized({1: True})
    st.only_tokens(VALID_TOKEN_1)


def test_authorization_without_transaction(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_authorization_without_transaction: a re-swipe before the transaction is already in process; after the timeout it starts again."""
    st = station()
    st.swipe(VALID_TOKEN_1, [1])
    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START])
    st.expect_authorized({1: True})

    st.swipe(VALID_TOKEN_1, [1])
    st.wait_already_in_process(1)  # ALREADY_IN_PROCESS: nothing published
    assert st.statuses(VALID_TOKEN_1)[:3] == [PROCESSING, ACCEPTED, USED_TO_START]
    st.expect_authorized({1: True})

    # EVerest sleeps for the timeout: the authorization expires, TimedOut is published.
    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START, TIMED_OUT])

    st.swipe(VALID_TOKEN_1, [1])
    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START, TIMED_OUT,
                              PROCESSING, ACCEPTED, USED_TO_START])
    st.expect_authorized({1: True})
    st.only_tokens(VALID_TOKEN_1)


def test_two_transactions_start_stop(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_two_transactions_start_stop: two transactions started after two plug-ins are stopped by their cards."""
    st = station()
    st.plug_in(1)
    st.plug_in(2)
    token1 = st.swipe(VALID_TOKEN_1, [1, 2])
    token2 = st.swipe(VALID_TOKEN_2, [1, 2])
    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START])
    st.expect(VALID_TOKEN_2, [PROCESSING, ACCEPTED, USED_TO_START])
    st.expect_authorized({1: True, 2: True})

    st.transaction_started(_used_evse(st, VALID_TOKEN_1), token1)
    st.transaction_started(_used_evse(st, VALID_TOKEN_2), token2)
    st.swipe(VALID_TOKEN_2, [1, 2])
    st.swipe(VALID_TOKEN_1, [1, 2])

    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START, PROCESSING, USED_TO_STOP])
    st.expect(VALID_TOKEN_2, [PROCESSING, ACCEPTED, USED_TO_START, PROCESSING, USED_TO_STOP])
    st.expect_authorized({1: False, 2: False})
    st.only_tokens(VALID_TOKEN_1, VALID_TOKEN_2)


# --- Plug&Charge -----------------------------------------------------------------------------------

PNC = {"authorization_type": "PlugAndCharge", "id_token_type": "eMAID", "certificate": "TestCertificate"}


def test_plug_and_charge(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_plug_and_charge: a Plug&Charge token authorizes the plugged-in EVSE."""
    st = station()
    st.plug_in(1)
    st.swipe(VALID_TOKEN_1, **PNC)

    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START])
    st.expect_authorized({1: True, 2: False})
    st.only_tokens(VALID_TOKEN_1)


def test_plug_and_charge_rejected(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_plug_and_charge_rejected: a rejected Plug&Charge token removes the authorization of the EVSEs it names."""
    st = station()
    # auth_receiver->authorize(0): put an authorization on the EVSE manager's side.
    st.rig.evse(1).received.append(("authorize_response", {
        "provided_token": {"id_token": id_token("PUT_BY_TEST"), "authorization_type": "RFID"},
        "validation_result": {"authorization_status": "Accepted", "tariff_messages": []}}))
    assert st.rig.authorized(1)
    st.plug_in(1)
    st.swipe(INVALID_TOKEN, [1, 2], **PNC)

    st.expect(INVALID_TOKEN, [PROCESSING, REJECTED])
    st.expect_authorized({1: False, 2: False})
    for evse_id in (1, 2):  # what clears the receiver's authorization: a not-Accepted response
        assert [a["validation_result"]["authorization_status"]
                for a in st.sent_to(evse_id, "authorize_response")] == ["Invalid"]
    st.only_tokens(INVALID_TOKEN)


def test_empty_intersection(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_empty_intersection: a result for EVSE 2 only does not fit a token for EVSE 1; the next result for 1 and 2 does."""
    st = station(validators=fixture_validators(
        tokens_a=[{"id_token": VALID_TOKEN_1, "status": "Accepted", "evse_ids": [2]}],
        tokens_b=[{"id_token": VALID_TOKEN_1, "status": "Accepted", "evse_ids": [1, 2]}]))
    st.plug_in(1)
    st.plug_in(2)
    st.swipe(VALID_TOKEN_1, [1], **PNC)

    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, ACCEPTED, USED_TO_START])
    # Both responses go to EVSE 1 back to back; the scripted EVSE records commands from a
    # worker pool, so their order is taken from the module's side.
    st.expect_authorized({1: True, 2: False}, evse_view=False)
    assert [a["validation_result"]["authorization_status"]
            for a in st.sent_to(1, "authorize_response")] == ["NotAtThisLocation", "Accepted"]
    wait_until(lambda: len(st.rig.commands(1, "authorize_response")) == 2, message="2 responses")
    assert st.rig.commands(2, "authorize_response") == []
    st.only_tokens(VALID_TOKEN_1)


# --- master pass --------------------------------------------------------------------------------


def test_master_pass_group_id(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_master_pass_group_id: the master pass group card cannot start; a card of that group stops the transaction."""
    st = station()  # prioritize_authorization_over_stopping_transaction: false
    st.set_master_pass_group_id(PARENT_ID_TOKEN)
    st.plug_in(1)

    st.swipe(PARENT_ID_TOKEN)  # not allowed to start transactions
    st.expect(PARENT_ID_TOKEN, [PROCESSING, REJECTED])

    token2 = st.swipe(VALID_TOKEN_2)  # accepted without parent id
    st.expect(VALID_TOKEN_2, [PROCESSING, ACCEPTED, USED_TO_START])
    st.transaction_started(1, token2)

    st.swipe(VALID_TOKEN_1)  # its parent is the master pass group: stops the transaction
    st.expect(VALID_TOKEN_1, [PROCESSING, USED_TO_STOP])
    st.expect_authorized({1: False, 2: False})
    [stop] = st.sent_to(1, "stop_transaction")
    assert stop["request"]["reason"] == "MasterPass"
    st.only_tokens(PARENT_ID_TOKEN, VALID_TOKEN_2, VALID_TOKEN_1)


def test_token_timed_out(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_token_timed_out: an accepted token with no plug-in is TimedOut once."""
    st = station()
    st.swipe(VALID_TOKEN_1, [1, 2])  # two EVSEs: select_evse waits for a plug-in
    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, TIMED_OUT])  # result == TIMEOUT

    time.sleep(QUIET_S)  # EVerest sleeps CONNECTION_TIMEOUT + 1: nothing more comes
    assert st.statuses(VALID_TOKEN_1) == [PROCESSING, ACCEPTED, TIMED_OUT]
    st.expect_authorized({1: False, 2: False})
    st.only_tokens(VALID_TOKEN_1)


def test_plug_in_time_out(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_plug_in_time_out: after the plug-in timeout the EVSE gets no authorization."""
    st = station()
    st.plug_in(1)
    # EVerest sleeps CONNECTION_TIMEOUT + 250 ms; the timeout's withdrawal is the marker.
    wait_until(lambda: st.rig.commands(1, "withdraw_authorization"), message="plug-in timeout")

    st.swipe(VALID_TOKEN_1, [1])

    st.expect(VALID_TOKEN_1, [PROCESSING, REJECTED])  # NO_CONNECTOR_AVAILABLE
    st.expect_authorized({1: False, 2: False})
    st.only_tokens(VALID_TOKEN_1)


def test_plug_in_time_out_disabled(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_plug_in_time_out_disabled: with the plug-in timeout disabled a late token still authorizes."""
    st = station(config={"plug_in_timeout_enabled": False})  # set_plug_in_timeout_enabled(false)
    st.plug_in(1)
    time.sleep(QUIET_S)  # EVerest sleeps CONNECTION_TIMEOUT (+ margin here)

    st.swipe(VALID_TOKEN_1, [1])

    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START])
    st.expect_authorized({1: True, 2: False})
    assert st.sent_to(1, "withdraw_authorization") == []
    st.only_tokens(VALID_TOKEN_1)


def test_subsequent_valid_tokens(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_subsequent_valid_tokens: a second valid card for an EVSE already authorized for another is rejected."""
    st = station()
    st.swipe(VALID_TOKEN_1, [1])
    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START])
    st.swipe(VALID_TOKEN_2, [1])

    st.expect(VALID_TOKEN_2, [PROCESSING, REJECTED])  # NO_CONNECTOR_AVAILABLE
    st.expect_authorized({1: True, 2: False})
    st.only_tokens(VALID_TOKEN_1, VALID_TOKEN_2)


# --- withdrawing authorization ---------------------------------------------------------------------


def test_withdraw_authorization(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_withdraw_authorization: a granted authorization is withdrawn; a second withdrawal finds none."""
    st = station()
    st.plug_in(1)
    st.swipe(VALID_TOKEN_1, [1])
    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START])
    st.expect_authorized({1: True, 2: False})

    assert st.withdraw(evse_id=1) == "Accepted"
    st.expect_authorized({1: False})
    # its token hears of it, as a timed-out one does (EVerest #2499)
    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START, WITHDRAWN])
    withdrawn = st.token_of(VALID_TOKEN_1, WITHDRAWN)
    assert withdrawn["connectors"] == [1]
    assert withdrawn["parent_id_token"] == id_token(PARENT_ID_TOKEN)

    st.event(1, "Deauthorized")
    assert st.withdraw(evse_id=1) == "AuthorizationNotFound"

    assert st.statuses(VALID_TOKEN_1) == [PROCESSING, ACCEPTED, USED_TO_START, WITHDRAWN]
    assert len(st.sent_to(1, "withdraw_authorization")) == 1  # Call(0) Times(1)
    assert st.sent_to(1, "stop_transaction") == [] and st.sent_to(2, "stop_transaction") == []
    st.only_tokens(VALID_TOKEN_1)


@pytest.mark.parametrize("withdrawn_while", [
    "waiting_for_plug_in",
    "validating",
])
def test_withdraw_authorization_while_waiting_for_ev_plugin(
    station: Callable[..., Station], withdrawn_while: str
) -> None:
    """auth_tests.cpp test_withdraw_authorization_while_waiting_for_ev_plugin: two tokens still selecting an EVSE are withdrawn by id token."""
    st = station()
    release = threading.Event()
    if withdrawn_while == "validating":
        # EVerest withdraws once Processing was published: the withdrawal may land while the
        # validators are still asked. Hold validator_b's answers to land it there for sure.
        validator_b = st.rig.validators[1]
        answer = validator_b.validate

        def held(value: str) -> Any:
            release.wait(DEADLINE_S)
            return answer(value)
        validator_b.validate = held  # type: ignore[method-assign]

    st.swipe(VALID_TOKEN_1, [1, 2])
    st.swipe(VALID_TOKEN_2, [1, 2])
    if withdrawn_while == "validating":
        wait_until(lambda: len(st.rig.validators[1].received) == 2, message="both being validated")
    else:
        st.wait_status(VALID_TOKEN_1, ACCEPTED)
        st.wait_status(VALID_TOKEN_2, ACCEPTED)

    results: dict[str, Any] = {}

    def withdraw(value: str) -> None:
        results[value] = st.withdraw(id_token=id_token(value))

    threads = [threading.Thread(target=withdraw, args=(v,)) for v in (VALID_TOKEN_1, VALID_TOKEN_2)]
    for thread in threads:
        thread.start()
    try:  # EVerest's withdrawal returns once the token is done; ours may return earlier
        wait_until(lambda: len(results) == 2, timeout=1.0)
    except AssertionError:
        pass
    release.set()
    for thread in threads:
        thread.join(DEADLINE_S + 1)

    assert results == {VALID_TOKEN_1: "Accepted", VALID_TOKEN_2: "Accepted"}
    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, WITHDRAWN])
    st.expect(VALID_TOKEN_2, [PROCESSING, ACCEPTED, WITHDRAWN])
    st.expect_authorized({1: False, 2: False})
    for evse_id in (1, 2):  # Call(0) Times(0); stop Times(0)
        assert st.sent_to(evse_id, "withdraw_authorization") == []
        assert st.sent_to(evse_id, "stop_transaction") == []
    st.only_tokens(VALID_TOKEN_1, VALID_TOKEN_2)


def test_withdraw_authorization_while_waiting_for_ev_plugin_timeout(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_withdraw_authorization_while_waiting_for_ev_plugin_timeout: a withdrawal for another token leaves the waiting one to time out."""
    st = station()
    st.swipe(VALID_TOKEN_1, [1, 2])
    st.wait_status(VALID_TOKEN_1, PROCESSING)

    assert st.withdraw(id_token=id_token(VALID_TOKEN_2)) == "AuthorizationNotFound"

    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, TIMED_OUT])  # result == TIMEOUT
    st.expect_authorized({1: False, 2: False})
    for evse_id in (1, 2):
        assert st.sent_to(evse_id, "withdraw_authorization") == []
        assert st.sent_to(evse_id, "stop_transaction") == []
    st.only_tokens(VALID_TOKEN_1)


def test_withdraw_authorization_during_transaction(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_withdraw_authorization_during_transaction: withdrawing during a transaction stops it."""
    st = station()
    st.plug_in(1)
    token = st.swipe(VALID_TOKEN_1, [1])
    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START])
    st.expect_authorized({1: True, 2: False})
    st.transaction_started(1, token)

    st.withdraw(id_token=id_token(VALID_TOKEN_1))

    wait_until(lambda: st.rig.commands(1, "stop_transaction"), message="stop_transaction on EVSE 1")
    [stop] = st.sent_to(1, "stop_transaction")  # Call(0, _) Times(1)
    assert stop["request"]["reason"] == "DeAuthorized"
    assert st.sent_to(1, "withdraw_authorization") == []  # Times(0)
    assert st.sent_to(2, "withdraw_authorization") == [] and st.sent_to(2, "stop_transaction") == []
    assert st.statuses(VALID_TOKEN_1)[:3] == [PROCESSING, ACCEPTED, USED_TO_START]
    assert len(st.statuses(VALID_TOKEN_1)) == 3
    st.only_tokens(VALID_TOKEN_1)


def test_two_authorization_plug_events(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_two_authorization_plug_events: a card for EVSE 1 takes it; a card for 1 or 2 then gets EVSE 2."""
    st = station()
    token1 = st.swipe(VALID_TOKEN_1, [1])
    st.plug_in(1)
    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START])
    st.expect_authorized({1: True, 2: False})

    st.transaction_started(1, token1)
    st.swipe(VALID_TOKEN_2, [1, 2])

    st.expect(VALID_TOKEN_2, [PROCESSING, ACCEPTED, USED_TO_START])
    st.expect_authorized({1: True, 2: True})
    st.only_tokens(VALID_TOKEN_1, VALID_TOKEN_2)


def test_token_swipe_race_with_timeout(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_token_swipe_race_with_timeout: the plug-in timeout fires while the token is validated: no EVSE is left."""
    # EVerest's validate callback here: {ValidationResult{} (Accepted), Accepted + parent}.
    st = station(validators=fixture_validators(
        tokens_a=[{"id_token": VALID_TOKEN_1, "status": "Accepted"}]))
    validator_b = st.rig.validators[1]
    answer = validator_b.validate

    def after_the_timeout(value: str) -> Any:  # timeout_entered_future.wait()
        wait_until(lambda: st.rig.commands(1, "withdraw_authorization"), timeout=DEADLINE_S,
                   message="the plug-in timeout")
        return answer(value)
    validator_b.validate = after_the_timeout  # type: ignore[method-assign]

    st.plug_in(1)
    st.swipe(VALID_TOKEN_1, [1])

    st.expect(VALID_TOKEN_1, [PROCESSING, REJECTED])  # NO_CONNECTOR_AVAILABLE
    assert len(validator_b.received) == 1  # the token was being validated when it fired
    st.expect_authorized({1: False})
    st.only_tokens(VALID_TOKEN_1)


# --- case-insensitive token values ---------------------------------------------------------------


def test_case_insensitive_authorization(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_case_insensitive_authorization: a lower-case card is accepted and published as presented."""
    st = station()
    st.plug_in(1)
    sent = st.swipe("valid_rfid_1", [1])
    expected = {**sent, "parent_id_token": id_token(PARENT_ID_TOKEN)}

    st.expect("valid_rfid_1", [PROCESSING, ACCEPTED, USED_TO_START])
    assert st.token_of("valid_rfid_1", ACCEPTED) == expected
    assert st.token_of("valid_rfid_1", USED_TO_START) == expected
    st.expect_authorized({1: True, 2: False})
    st.only_tokens("valid_rfid_1")


def test_case_insensitive_stop_transaction(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_case_insensitive_stop_transaction: the same card in another letter case stops the transaction."""
    st = station()
    st.plug_in(1)
    token = st.swipe(VALID_TOKEN_1, [1])
    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START])
    st.expect_authorized({1: True})
    st.transaction_started(1, token)

    st.swipe("VALID_rfid_1", [1])

    st.expect("VALID_rfid_1", [PROCESSING, USED_TO_STOP])
    assert st.statuses(VALID_TOKEN_1) == [PROCESSING, ACCEPTED, USED_TO_START]
    st.expect_authorized({1: False})
    st.only_tokens(VALID_TOKEN_1, "VALID_rfid_1")


def test_case_insensitive_parent_id_stop_transaction(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_case_insensitive_parent_id_stop_transaction: a card of the same group stops the transaction."""
    st = station()
    st.plug_in(1)
    token1 = st.swipe(VALID_TOKEN_1, [1, 2])
    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START])
    st.transaction_started(1, token1)
    st.expect_authorized({1: True})

    st.swipe(VALID_TOKEN_3, [1, 2])  # same parent id as VALID_TOKEN_1

    st.expect(VALID_TOKEN_3, [PROCESSING, USED_TO_STOP])
    st.expect_authorized({1: False})
    st.only_tokens(VALID_TOKEN_1, VALID_TOKEN_3)


def test_case_insensitive_master_pass_group_id(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_case_insensitive_master_pass_group_id: a lower-case master pass group id matches an upper-case parent id."""
    st = station()
    st.set_master_pass_group_id("parent_rfid")
    st.plug_in(1)

    st.swipe("PARENT_RFID")
    st.expect("PARENT_RFID", [PROCESSING, REJECTED])

    token2 = st.swipe(VALID_TOKEN_2)
    st.expect(VALID_TOKEN_2, [PROCESSING, ACCEPTED, USED_TO_START])
    st.transaction_started(1, token2)

    st.swipe(VALID_TOKEN_1)
    st.expect(VALID_TOKEN_1, [PROCESSING, USED_TO_STOP])
    st.expect_authorized({1: False})
    [stop] = st.sent_to(1, "stop_transaction")
    assert stop["request"]["reason"] == "MasterPass"
    st.only_tokens("PARENT_RFID", VALID_TOKEN_2, VALID_TOKEN_1)


def test_case_insensitive_withdraw_authorization(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_case_insensitive_withdraw_authorization: a withdrawal naming the card in another case withdraws it."""
    st = station()
    st.plug_in(1)
    st.swipe(VALID_TOKEN_1, [1])
    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START])
    st.expect_authorized({1: True})

    assert st.withdraw(evse_id=1, id_token=id_token("valid_RFID_1")) == "Accepted"

    st.expect_authorized({1: False})
    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START, WITHDRAWN])  # EVerest #2499
    assert len(st.sent_to(1, "withdraw_authorization")) == 1  # Call(0) Times(1)
    st.only_tokens(VALID_TOKEN_1)


def test_case_insensitive_reservation_matching(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_case_insensitive_reservation_matching: a reservation for "VALID_rfid_2" is used by "valid_RFID_2"."""
    st = station()
    assert st.reserve(evse_id=1, id_token="VALID_rfid_2", reservation_id=1, connector_type="cCCS2",
                      expiry_time=rfc3339(timedelta(hours=1))) == "Accepted"
    st.event(1, "ReservationStart")
    st.plug_in(1)

    st.swipe("valid_RFID_2", [1, 2])

    st.expect("valid_RFID_2", [PROCESSING, ACCEPTED, USED_TO_START])
    st.expect_authorized({1: True, 2: False})
    st.only_tokens("valid_RFID_2")


# --- EVerest 2026: plug-in order (PR #2344) ---------------------------------------------------


def test_plug_events_selects_first_plugin(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_plug_events_selects_first_plugin: PlugEvents takes the EVSE plugged in first."""
    st = station()
    st.plug_in(2)  # EVSE 2 first, then EVSE 1
    st.plug_in(1)
    st.swipe(VALID_TOKEN_1, [1, 2])

    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START])
    assert st.token_of(VALID_TOKEN_1, USED_TO_START)["connectors"] == [2]
    st.expect_authorized({1: False, 2: True})
    st.only_tokens(VALID_TOKEN_1)


def test_plug_events_lifo_selects_most_recent_plugin(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_plug_events_lifo_selects_most_recent_plugin: PlugEventsLIFO takes the EVSE plugged in last."""
    st = station(config={"selection_algorithm": "PlugEventsLIFO"})
    st.plug_in(2)  # EVSE 2 first, then EVSE 1
    st.plug_in(1)
    st.swipe(VALID_TOKEN_1, [1, 2])

    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START])
    assert st.token_of(VALID_TOKEN_1, USED_TO_START)["connectors"] == [1]
    st.expect_authorized({1: True, 2: False})
    st.only_tokens(VALID_TOKEN_1)


# --- EVerest 2026: stop_transaction_on_reswipe (PR #2530) -------------------------------------

NO_RESWIPE_STOP = {"stop_transaction_on_reswipe": False}


def test_reswipe_publishes_used_to_reauthorize(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_reswipe_publishes_used_to_reauthorize: with stop_transaction_on_reswipe false the card swiped again leaves its transaction running, UsedToReauthorize on every swipe."""
    st = station(config=NO_RESWIPE_STOP)
    st.plug_in(1)
    token = st.swipe(VALID_TOKEN_1, [1, 2])
    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START])
    st.expect_authorized({1: True, 2: False})
    st.transaction_started(1, token)

    st.swipe(VALID_TOKEN_1, [1, 2])  # second swipe: not a stop
    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START, PROCESSING, USED_TO_REAUTHORIZE])
    st.swipe(VALID_TOKEN_1, [1, 2])  # third swipe: the same again
    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START, PROCESSING, USED_TO_REAUTHORIZE,
                              PROCESSING, USED_TO_REAUTHORIZE])
    for n in (0, 1):
        assert st.token_of(VALID_TOKEN_1, USED_TO_REAUTHORIZE, n)["connectors"] == [1]
    st.expect_authorized({1: True, 2: False})
    assert st.sent_to(1, "stop_transaction") == [] and st.sent_to(2, "stop_transaction") == []
    st.only_tokens(VALID_TOKEN_1)


def test_parent_id_reswipe_publishes_used_to_reauthorize(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_parent_id_reswipe_publishes_used_to_reauthorize: a card of the same group does not stop the transaction either."""
    st = station(config=NO_RESWIPE_STOP)
    st.plug_in(1)
    token1 = st.swipe(VALID_TOKEN_1, [1, 2])
    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START])
    st.transaction_started(1, token1)
    st.expect_authorized({1: True, 2: False})

    st.swipe(VALID_TOKEN_3, [1, 2])
    st.expect(VALID_TOKEN_3, [PROCESSING, USED_TO_REAUTHORIZE])
    reported = st.token_of(VALID_TOKEN_3, USED_TO_REAUTHORIZE)
    assert reported["connectors"] == [1]
    assert reported["parent_id_token"]["value"] == PARENT_ID_TOKEN
    st.expect_authorized({1: True, 2: False})
    assert st.sent_to(1, "stop_transaction") == [] and st.sent_to(2, "stop_transaction") == []
    assert st.statuses(VALID_TOKEN_1) == [PROCESSING, ACCEPTED, USED_TO_START]
    st.only_tokens(VALID_TOKEN_1, VALID_TOKEN_3)


def test_master_pass_still_stops_when_reswipe_stop_disabled(station: Callable[..., Station]) -> None:
    """auth_tests.cpp test_master_pass_still_stops_when_reswipe_stop_disabled: the master pass group stops transactions anyway."""
    st = station(config=NO_RESWIPE_STOP)  # prioritize_authorization_over_stopping_transaction: false
    st.set_master_pass_group_id(PARENT_ID_TOKEN)
    st.plug_in(1)

    token2 = st.swipe(VALID_TOKEN_2)
    st.expect(VALID_TOKEN_2, [PROCESSING, ACCEPTED, USED_TO_START])
    st.transaction_started(1, token2)

    st.swipe(VALID_TOKEN_1)  # its parent is the master pass group
    st.expect(VALID_TOKEN_1, [PROCESSING, USED_TO_STOP])
    st.expect_authorized({1: False, 2: False})
    [stop] = st.sent_to(1, "stop_transaction")
    assert stop["request"]["reason"] == "MasterPass"
    st.only_tokens(VALID_TOKEN_2, VALID_TOKEN_1)
