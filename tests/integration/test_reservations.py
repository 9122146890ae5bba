"""EVerest's reservation scenarios against the running module, over a real broker.

Ports ``modules/EVSE/Auth/tests/reservation_tests.cpp`` (ReservationHandler) and the
reservation scenarios of ``auth_tests.cpp`` (AuthHandler), one test per ``TEST_F`` with the
same name, plus our own checks of what the issue asks for (expiry, refusal by an EVSE
manager, replacement by id, station-wide holds, ``exists_reservation``, ``ReservationEnd``).

Everything is observed from outside ``auth-module --config ...``: results of
``reserve_now`` / ``cancel_reservation`` / ``exists_reservation``, the ``reserve`` and
``cancel_reservation`` commands the EVSE managers receive, ``reservation_update``,
``token_validation_status`` and ``authorize_response``.

How the C++ fixture maps onto the bus:

* ``add_connector(evse, connector, type)`` -> a scripted EVSE manager answering ``get_evse``.
  EVerest's ids start at 0 and may have gaps (0, 4, 7); the contract wants EVSE n to be the
  n-th EVSE manager, so the C++ EVSEs are renumbered 1, 2, 3... in the order they are made,
  and connector ids get +1 (the bus treats a missing/0 connector id as 1). Each test says how.
* ``make_reservation(evse, create_reservation(type))`` -> ``reserve_now`` with the next id,
  token ``TOKEN_<id>``, expiry in an hour. ``cancel_reservation`` -> the bus command.
* ``submit_event(DISABLE)`` on a connector -> a ``Disabled`` session event for that connector;
  ``FAULTED`` / ``ERROR_CLEARED`` -> the ``evse_manager/Inoperative`` error raised / cleared,
  which faults every connector of that EVSE (the bus has no per-connector fault). The C++
  tests fault whole EVSEs except in ``change_availability_*`` and
  ``reservation_connector_unavailable``; there the EVSE-wide fault gives the same results
  (explained in each test).
* ``is_charging_possible(evse)`` -> a probe token naming only that EVSE: it is taken
  (``UsedToStart``) iff charging is possible there; the authorization is withdrawn again.
* ``matches_reserved_identifier`` / ``has_reservation_parent_id`` / ``is_evse_reserved`` ->
  ``exists_reservation`` answers (and, for a parent id held by a station-wide reservation, the
  probe token being validated instead of refused at once).
* the reservation-cancelled callback -> ``reservation_update`` (``Expired`` / ``Removed``) plus
  ``cancel_reservation`` to the EVSE manager of an EVSE-specific reservation.
* ``store_load_*`` "clear the maps and load" -> restarting the module on the same station file.

Skipped, because they inspect internal state only (nothing of them reaches the bus):

* ``reservation_tests.cpp get_all_possible_orders`` and ``get_all_possible_orders2``: a
  private helper enumerating arrival orders (covered by tests/unit/test_reservations.py).
* Parts skipped inside ported tests: the size of the timer map in ``store_load_*`` (the
  crash tests show timers run again after a restart), and ``on_reservation_used(2)`` of an
  id that never existed (a no-op on a private method).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from simulators.broker import Mosquitto

from .harness import EvseTaps, Rig, ValidatorSpec, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PREFIX = "everest/"
A, O, F, U, R = "Accepted", "Occupied", "Faulted", "Unavailable", "Rejected"
NOT_RESERVED = "NotReserved"
FOR_TOKEN = "ReservedForToken"
FOR_OTHER = "ReservedForOtherToken"
FOR_OTHER_WITH_PARENT = "ReservedForOtherTokenAndHasParentToken"
PROCESSING, ACCEPTED, REJECTED = "Processing", "Accepted", "Rejected"
USED_TO_START, TIMED_OUT = "UsedToStart", "TimedOut"
FINAL = {"Rejected", "UsedToStart", "UsedToStop", "TimedOut", "Withdrawn"}

# Layouts of the C++ fixtures, renumbered (see the module docstring).
CCS_TYPE2 = [(1, "cCCS2"), (2, "cType2")]
THREE_ONE_CCS_TWO_COMBINED = [[(1, "cCCS2")], CCS_TYPE2, CCS_TYPE2]
TWO_COMBINED = [CCS_TYPE2, CCS_TYPE2]
THREE_COMBINED = [CCS_TYPE2, CCS_TYPE2, CCS_TYPE2]
# C++ evses 0-2 [c0 cCCS2, c1 cType2] and evse 3 [c1 cType2] -> ours 1-3 and 4 [(2, cType2)].
FOUR_MIXED = [CCS_TYPE2, CCS_TYPE2, CCS_TYPE2, [(2, "cType2")]]
# C++ evse 0 [c1 cType2], 1 [c0 cCCS2, c1 cType2], 2 [c0 cCCS2].
TYPE2_CCS_COMBO = [[(2, "cType2")], CCS_TYPE2, [(1, "cCCS2")]]


def rfc3339(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def id_token(value: str) -> dict[str, str]:
    return {"value": value, "type": "ISO14443"}


class Station(EvseTaps):
    """A started Rig plus taps on what the module sends the EVSE managers."""

    def __init__(self, rig: Rig) -> None:
        super().__init__(rig, PREFIX)
        self._next_id = 0
        self._probes = 0
        self.accepted: list[tuple[int, int | None]] = []  # (reservation id, evse id) Accepted

    # --- the reservation interface -------------------------------------------------------------

    def reserve(self, reservation_id: int, token: str, evse_id: int | None = None,
                connector_type: str | None = None, *, expiry: str | None = None,
                parent: str | None = None) -> str:
        request: dict[str, Any] = {"reservation_id": reservation_id, "id_token": token,
                                   "expiry_time": expiry or rfc3339(timedelta(hours=1))}
        if evse_id is not None:
            request["evse_id"] = evse_id
        if connector_type is not None:
            request["connector_type"] = connector_type
        if parent is not None:
            request["parent_id_token"] = parent
        result = self.rig.call("reservation", "reserve_now", {"request": request})
        if result == A:
            self.accepted = [(r, e) for r, e in self.accepted if r != reservation_id]
            self.accepted.append((reservation_id, evse_id))
        return result

    def create(self, evse_id: int | None, connector_type: str | None, **kw: Any) -> str:
        """``make_reservation(evse, create_reservation(type))``: next id, token TOKEN_<id>."""
        rid = self._next_id
        self._next_id += 1
        return self.reserve(rid, f"TOKEN_{rid}", evse_id, connector_type, **kw)

    def cancel(self, reservation_id: int) -> bool:
        return self.rig.call("reservation", "cancel_reservation", {"reservation_id": reservation_id})

    def exists(self, token: str, evse_id: int | None = None, group: str | None = None) -> str:
        request: dict[str, Any] = {"id_token": token}
        if evse_id is not None:
            request["evse_id"] = evse_id
        if group is not None:
            request["group_id_token"] = group
        return self.rig.call("reservation", "exists_reservation", {"request": request})

    def barrier(self) -> None:
        """A round trip: everything the module did for earlier messages is on the wire now."""
        self.exists("BARRIER")

    def updates(self) -> list[tuple[int, str]]:
        return [(u["reservation_id"], u["reservation_status"])
                for u in list(self.rig.reservation_updates)]

    def wait_updates(self, expected: list[tuple[int, str]], since: int = 0) -> None:
        wait_until(lambda: self.updates()[since:] == expected
                   or len(self.updates()[since:]) > len(expected),
                   message=f"reservation updates {expected}")
        assert self.updates()[since:] == expected

    def check_placed(self) -> None:
        """Placed was published exactly for the accepted reservations, and each EVSE-specific
        one was passed to its EVSE manager with ``reserve`` (refused ones never were)."""
        self.barrier()
        placed = [(r, "Placed") for r, _ in self.accepted]
        wait_until(lambda: [u for u in self.updates() if u[1] == "Placed"] == placed,
                   message=f"Placed for {placed}")
        assert [u for u in self.updates() if u[1] == "Placed"] == placed
        told = [(e, a["reservation_id"]) for e, c, a in self.sent_snapshot()
                if c == "reserve" and a["reservation_id"] >= 0]
        assert told == [(e, r) for r, e in self.accepted if e is not None]

    # --- the EVSE managers --------------------------------------------------------------------

    def sent_snapshot(self) -> list[tuple[int, str, dict[str, Any]]]:
        with self._lock:
            return list(self.sent)

    def sent_to(self, evse_id: int, cmd: str, since: int = 0) -> list[dict[str, Any]]:
        return [a for e, c, a in self.sent_snapshot()[since:] if e == evse_id and c == cmd]

    def mark(self) -> int:
        return len(self.sent_snapshot())

    def event(self, evse_id: int, name: str, connector_id: int = 1, **sub: Any) -> None:
        topic = f"{PREFIX}modules/evse_manager_{evse_id}/impl/evse/var/session_event"
        self._through_broker(
            topic, lambda: self.rig.evse(evse_id).event(name, connector_id=connector_id, **sub))

    def disable(self, evse_id: int, connector_id: int) -> None:
        self.event(evse_id, "Disabled", connector_id)

    def plug_in(self, evse_id: int, reason: str = "EVConnected") -> None:
        self.event(evse_id, "SessionStarted", session_started={
            "reason": reason, "meter_value": {"energy_Wh_import": {"total": 0}}})

    def transaction_started(self, evse_id: int, token: dict[str, Any], connector_id: int = 1) -> None:
        self.event(evse_id, "TransactionStarted", connector_id, transaction_started={
            "id_tag": token, "meter_value": {"energy_Wh_import": {"total": 0}}})

    def session_finished(self, evse_id: int, connector_id: int = 1) -> None:
        self.event(evse_id, "SessionFinished", connector_id)

    def fault(self, evse_id: int) -> None:
        topic = f"{PREFIX}modules/evse_manager_{evse_id}/impl/evse/error/evse_manager/Inoperative"
        self._through_broker(topic, self.rig.evse(evse_id).fault)

    def clear_fault(self, evse_id: int) -> None:
        topic = f"{PREFIX}modules/evse_manager_{evse_id}/impl/evse/error/evse_manager/Inoperative"
        self._through_broker(topic, self.rig.evse(evse_id).clear_fault)

    # --- tokens -------------------------------------------------------------------------------

    def swipe(self, value: str, connectors: list[int] | None = None) -> dict[str, Any]:
        return self.rig.swipe(value, connectors=connectors)

    def statuses(self, value: str) -> list[str]:
        return self.rig.statuses.of(value)

    def expect(self, value: str, expected: list[str]) -> None:
        self.rig.statuses.expect(value, expected)

    def responses(self, evse_id: int, value: str, since: int = 0) -> list[dict[str, Any]]:
        """``validation_result`` of every ``authorize_response`` for token ``value`` to the EVSE."""
        return [a["validation_result"] for a in self.sent_to(evse_id, "authorize_response", since)
                if a["provided_token"]["id_token"]["value"] == value]

    def withdraw(self, evse_id: int) -> str:
        return self.rig.call("main", "withdraw_authorization", {"request": {"evse_id": evse_id}})

    def charging_possible(self, evse_id: int) -> bool:
        """``is_charging_possible``: does a walk-in token naming only this EVSE get it?"""
        self._probes += 1
        value = f"PROBE_{self._probes}"
        self.swipe(value, [evse_id])
        wait_until(lambda: FINAL & set(self.statuses(value)), message=f"final status of {value}")
        got = self.statuses(value)
        if USED_TO_START in got:
            assert got == [PROCESSING, ACCEPTED, USED_TO_START], got
            assert self.withdraw(evse_id) == "Accepted"
            return True
        assert got in ([PROCESSING, REJECTED], [PROCESSING, ACCEPTED, REJECTED]), got
        return False

    def walk_in_validated(self, evse_id: int) -> bool:
        """A stranger's token naming this EVSE: validated (and then refused) rather than
        refused before validation? (``has_reservation_parent_id`` lets it through.)"""
        self._probes += 1
        value = f"STRANGER_{self._probes}"
        self.swipe(value, [evse_id])
        wait_until(lambda: FINAL & set(self.statuses(value)), message=f"final status of {value}")
        got = self.statuses(value)
        assert got in ([PROCESSING, REJECTED], [PROCESSING, ACCEPTED, REJECTED]), got
        return got == [PROCESSING, ACCEPTED, REJECTED]

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.rig.stop_module(sig)
        self.rig.start_module()


@pytest.fixture(scope="module")
def shared_broker() -> Iterator[Mosquitto]:
    """One mosquitto for this file's tests (each test has its own module and simulators,
    all stopped before the next test starts; sessions are clean and nothing is retained).
    Stopping a broker costs ~0.1 s, which over this many tests matters."""
    with Mosquitto() as b:
        yield b


@pytest.fixture
def station(shared_broker: Mosquitto, tmp_path: Path) -> Iterator[Callable[..., Station]]:
    """``station(evses, config=..., validators=...)``: start a station of scripted EVSEs."""
    rigs: list[Rig] = []

    def start(evses: list[list[tuple[int, str]]], config: dict[str, Any] | None = None,
              validators: list[ValidatorSpec] | None = None) -> Station:
        # connection_timeout 10 s (EVerest's tests use 1 s): no authorization or plug-in timer
        # may fire in the middle of a scenario on a slow machine; none of these relies on one.
        rig = Rig(shared_broker, tmp_path, scripted=True, evses=evses,
                  config={"connection_timeout": 10, **(config or {})},
                  validators=validators or [ValidatorSpec("validator", unknown_status="Accepted")])
        rigs.append(rig)
        st = Station(rig)
        rig.start()
        return st

    try:
        yield start
    finally:
        for rig in rigs:
            rig.stop_module(signal.SIGKILL)  # the state is thrown away anyway; saves time
            rig.stop()
            print(f"--- module log ({rig.log_path}) ---\n{rig.module_log()[-6000:]}")


# =============================================================================================
# reservation_tests.cpp: station-wide ("global") reservations
# =============================================================================================


def test_global_reservation_scenario_01(station: Callable[..., Station]) -> None:
    """3 EVSEs, [cCCS2], [cCCS2, cType2] x2: three cCCS2 station-wide reservations fit, no more."""
    st = station(THREE_ONE_CCS_TWO_COMBINED)
    assert st.create(None, "cCCS2") == A
    assert st.create(None, "cCCS2") == A
    assert st.create(None, "cCCS2") == A
    assert st.create(None, "cCCS2") == O
    assert st.create(None, "cType2") == O
    st.check_placed()


def test_global_reservation_scenario_02(station: Callable[..., Station]) -> None:
    """One cType2 and one cCCS2 fit; a third car of either type could be shut out."""
    st = station(THREE_ONE_CCS_TWO_COMBINED)
    assert st.create(None, "cType2") == A
    assert st.create(None, "cCCS2") == A
    assert st.create(None, "cType2") == O
    assert st.create(None, "cCCS2") == O
    st.check_placed()


def test_global_reservation_scenario_03(station: Callable[..., Station]) -> None:
    """Two cType2 fit; then neither cCCS2 nor a third cType2."""
    st = station(THREE_ONE_CCS_TWO_COMBINED)
    assert st.create(None, "cType2") == A
    assert st.create(None, "cType2") == A
    assert st.create(None, "cCCS2") == O
    assert st.create(None, "cType2") == O
    st.check_placed()


def test_global_reservation_scenario_04(station: Callable[..., Station]) -> None:
    """C++ EVSEs 0, 4, 7 -> 1, 2, 3: cCCS2 and cType2 fit, a second cType2 does not."""
    st = station(THREE_ONE_CCS_TWO_COMBINED)
    assert st.create(None, "cCCS2") == A
    assert st.create(None, "cType2") == A
    assert st.create(None, "cType2") == O
    st.check_placed()


def test_global_reservation_scenario_05(station: Callable[..., Station]) -> None:
    """4 EVSEs, one with cType2: after a cCCS2 reservation cType2 is refused, cCCS2 is not."""
    st = station([[(1, "cCCS2")], [(1, "cCCS2")], CCS_TYPE2, [(6, "cCCS2")]])
    assert st.create(None, "cCCS2") == A
    assert st.create(None, "cType2") == O
    assert st.create(None, "cCCS2") == A
    st.check_placed()


def test_global_reservation_scenario_06(station: Callable[..., Station]) -> None:
    """[cCCS2] x2 + [cCCS2, cType2]: one cType2 fits and then nothing else."""
    st = station([[(1, "cCCS2")], [(1, "cCCS2")], CCS_TYPE2])
    assert st.create(None, "cType2") == A
    assert st.create(None, "cType2") == O
    assert st.create(None, "cCCS2") == O
    st.check_placed()


def test_global_reservation_scenario_07(station: Callable[..., Station]) -> None:
    """One EVSE [cCCS2, sType3]: a type it lacks is Rejected, Unknown is Accepted."""
    st = station([[(1, "cCCS2"), (2, "sType3")]])
    assert st.create(None, "cType2") == R
    assert st.create(None, "Unknown") == A
    st.check_placed()


def test_global_reservation_scenario_08(station: Callable[..., Station]) -> None:
    """3 combined EVSEs: cCCS2 and Unknown reservations, three at most."""
    st = station(THREE_COMBINED)
    assert st.create(None, "cCCS2") == A
    assert st.create(None, "Unknown") == A
    assert st.create(None, "Unknown") == A
    assert st.create(None, "cCCS2") == O
    assert st.create(None, "Unknown") == O
    st.check_placed()


def test_global_reservation_scenario_09(station: Callable[..., Station]) -> None:
    """3 combined EVSEs: Unknown, cCCS2, cType2 fit; a fourth does not."""
    st = station(THREE_COMBINED)
    assert st.create(None, "Unknown") == A
    assert st.create(None, "cCCS2") == A
    assert st.create(None, "cType2") == A
    assert st.create(None, "cCCS2") == O
    st.check_placed()


def test_global_reservation_scenario_10(station: Callable[..., Station]) -> None:
    """C++ EVSEs 0, 2, 5 with two Unknown connectors each: any three types fit."""
    unknown = [(1, "Unknown"), (2, "Unknown")]
    st = station([unknown, unknown, unknown])
    assert st.create(None, "cCCS2") == A
    assert st.create(None, "Unknown") == A
    assert st.create(None, "Other3Ph") == A
    assert st.create(None, "cCCS2") == O
    st.check_placed()


def test_global_reservation_scenario_11(station: Callable[..., Station]) -> None:
    """3 EVSEs [cCCS2]: three cCCS2/Unknown fit, cType2 is Rejected (no such connector)."""
    st = station([[(1, "cCCS2")], [(1, "cCCS2")], [(1, "cCCS2")]])
    assert st.create(None, "cCCS2") == A
    assert st.create(None, "Unknown") == A
    assert st.create(None, "cType2") == R
    assert st.create(None, "cCCS2") == A
    assert st.create(None, "cCCS2") == O
    st.check_placed()


def test_global_reservation_scenario_12(station: Callable[..., Station]) -> None:
    """[cCCS2, cType2], [cType2, cTesla], [cTesla, cCCS2]: only two reservations are safe."""
    st = station([CCS_TYPE2, [(1, "cType2"), (2, "cTesla")], [(1, "cTesla"), (2, "cCCS2")]])
    assert st.create(None, "cType1") == R
    assert st.create(None, "cCCS2") == A
    assert st.create(None, "cType2") == A
    assert st.create(None, "cTesla") == O
    assert st.create(None, "cCCS2") == O
    assert st.create(None, "cType2") == O
    st.check_placed()


# =============================================================================================
# reservation_tests.cpp: EVSE-specific reservations and combinations
# =============================================================================================


def test_specific_evse_scenario_01(station: Callable[..., Station]) -> None:
    """C++ EVSE n -> n+1. A type the EVSE lacks is Rejected, a held EVSE answers Occupied."""
    st = station(THREE_COMBINED)
    assert st.create(2, "cCCS1") == R
    assert st.create(2, "cCCS2") == A
    assert st.create(2, "cCCS2") == O
    assert st.create(1, "cCCS2") == A
    assert st.create(3, "cCCS2") == A
    assert st.create(3, "cCCS2") == O
    st.check_placed()


def test_specific_evse_scenario_02(station: Callable[..., Station]) -> None:
    """C++ EVSE 0 [c0 cCCS2] -> 1, EVSE 1 [c1 cType2] -> 2."""
    st = station([[(1, "cCCS2")], [(2, "cType2")]])
    assert st.create(2, "cCCS2") == R
    assert st.create(2, "cType2") == A
    assert st.create(2, "cCCS2") == O
    assert st.create(1, "cCCS2") == A
    assert st.create(1, "cCCS2") == O
    st.check_placed()


def test_global_reservation_specific_evse_combination_scenario_01(
        station: Callable[..., Station]) -> None:
    """A station-wide cType2 reservation keeps EVSE 1 (C++ 0) from being reserved."""
    st = station(TYPE2_CCS_COMBO)
    assert st.create(None, "cType2") == A
    assert st.create(2, "cCCS2") == A
    assert st.create(2, "cCCS2") == O
    assert st.create(2, "cType2") == O
    assert st.create(3, "cCCS2") == A
    assert st.create(1, "cType2") == O
    assert st.create(2, "cCCS2") == O
    assert st.create(None, "cType2") == O
    assert st.create(None, "cCCS2") == O
    st.check_placed()


def test_global_reservation_specific_evse_combination_scenario_02(
        station: Callable[..., Station]) -> None:
    """Station-wide cType2, EVSE 2 held: a station-wide cCCS2 still fits (on EVSE 3)."""
    st = station(TYPE2_CCS_COMBO)
    assert st.create(None, "cType2") == A
    assert st.create(2, "cCCS2") == A
    assert st.create(2, "cCCS2") == O
    assert st.create(2, "cType2") == O
    assert st.create(None, "cType2") == O
    assert st.create(None, "cCCS2") == A
    assert st.create(None, "cType2") == O
    assert st.create(None, "cCCS2") == O
    assert st.create(3, "cCCS2") == O
    assert st.create(1, "cType2") == O
    assert st.create(2, "cCCS2") == O
    st.check_placed()


def test_global_reservation_specific_evse_combination_scenario_03(
        station: Callable[..., Station]) -> None:
    """Four EVSEs (C++ 0-3 -> 1-4): EVSE-specific plus station-wide cCCS2."""
    st = station(FOUR_MIXED)
    assert st.create(3, "cType2") == A
    assert st.create(3, "cCCS2") == O
    assert st.create(2, "cType2") == A
    assert st.create(None, "cCCS2") == A
    assert st.create(None, "cCCS2") == O
    assert st.create(None, "cType2") == O
    assert st.create(4, "cType2") == A
    st.check_placed()


def test_check_charging_possible_global_specific_reservations_scenario_01(
        station: Callable[..., Station]) -> None:
    """Walk-in tokens per EVSE (C++ 0-3 -> 1-4; C++ 4, which does not exist, -> 5)."""
    st = station(FOUR_MIXED)
    p = st.charging_possible
    assert [p(1), p(3), p(2), p(4)] == [True, True, True, True]
    assert p(5) is False
    assert st.create(3, "cType2") == A
    assert [p(1), p(3), p(2), p(4)] == [True, False, True, True]
    assert st.create(2, "cType2") == A
    assert [p(1), p(3), p(2), p(4)] == [True, False, False, True]
    assert st.create(None, "cCCS2") == A
    assert p(1) is False  # EVSE 1 is the only cCCS2 left for the station-wide reservation
    assert p(4) is True
    assert st.create(4, "cType2") == A
    assert [p(1), p(2), p(3), p(4)] == [False, False, False, False]
    st.check_placed()


def test_check_charging_possible_global_specific_reservations_scenario_02(
        station: Callable[..., Station]) -> None:
    """Walk-in tokens per EVSE (C++ 0-2 -> 1-3) as reservations accumulate."""
    st = station(TYPE2_CCS_COMBO)
    p = st.charging_possible
    assert [p(1), p(2), p(3)] == [True, True, True]
    assert st.create(None, "cType2") == A
    assert [p(1), p(2), p(3)] == [True, True, True]
    assert st.create(2, "cCCS2") == A
    assert [p(1), p(2), p(3)] == [False, False, True]
    assert st.create(None, "cCCS2") == A
    assert [p(1), p(2), p(3)] == [False, False, False]
    st.check_placed()


def test_is_evse_reserved(station: Callable[..., Station]) -> None:
    """Only an EVSE-specific reservation reserves an EVSE (exists_reservation per EVSE)."""
    st = station(TWO_COMBINED)
    assert st.exists("SOMEONE", 1) == NOT_RESERVED
    assert st.exists("SOMEONE", 2) == NOT_RESERVED
    assert st.create(None, "cCCS2") == A
    assert st.exists("SOMEONE", 1) == NOT_RESERVED
    assert st.exists("SOMEONE", 2) == NOT_RESERVED
    assert st.create(2, "cCCS2") == A
    assert st.exists("SOMEONE", 1) == NOT_RESERVED
    assert st.exists("SOMEONE", 2) == FOR_OTHER
    st.check_placed()


# =============================================================================================
# reservation_tests.cpp: availability changes
# =============================================================================================


def test_change_availability_scenario_01(station: Callable[..., Station]) -> None:
    """Four station-wide cType2 reservations; connectors going away cancel the latest ones.

    C++ EVSE 3's only connector and EVSE 0's cType2 connector are FAULTED there; here the
    whole EVSE faults. EVSE 4 has that one connector only; on EVSE 1 the cCCS2 connector
    faulting first leaves the cType2 one, so the cancellations are the same.
    """
    st = station(FOUR_MIXED)
    for _ in range(4):
        assert st.create(None, "cType2") == A
    base = len(st.updates())

    st.disable(2, 2)  # C++ evses[1] connector 1 (cType2) DISABLE
    st.wait_updates([(3, "Removed")], base)

    st.fault(4)  # C++ evses[3] connector FAULTED
    st.wait_updates([(3, "Removed"), (2, "Removed")], base)

    st.clear_fault(4)  # ERROR_CLEARED: no cancellation
    st.disable(3, 2)  # one more cType2 gone: still one per reservation left
    st.barrier()
    assert st.updates()[base:] == [(3, "Removed"), (2, "Removed")]

    st.fault(1)  # C++ evses[0] connector 1 (cType2) FAULTED
    st.wait_updates([(3, "Removed"), (2, "Removed"), (1, "Removed")], base)
    assert st.exists("TOKEN_0") == FOR_TOKEN
    assert [st.exists(f"TOKEN_{i}") for i in (1, 2, 3)] == [NOT_RESERVED] * 3


def test_change_availability_scenario_02(station: Callable[..., Station]) -> None:
    """EVSE-specific and station-wide mixed: the EVSE's own reservation goes first.

    The C++ test faults single connectors (cType2) of EVSEs 2 and 0; here the whole EVSE
    faults, its cCCS2 connector first, which cancels nothing by itself.
    """
    st = station(FOUR_MIXED)
    assert st.create(2, "cType2") == A  # id 0, C++ evse 1
    assert st.create(4, "cType2") == A  # id 1, C++ evse 3
    assert st.create(None, "cType2") == A  # id 2
    assert st.create(None, "cType2") == A  # id 3
    base = len(st.updates())

    m = st.mark()
    st.disable(2, 2)  # C++ evses[1] connector 1 DISABLE: its own reservation is cancelled
    st.wait_updates([(0, "Removed")], base)
    wait_until(lambda: st.sent_to(2, "cancel_reservation", m), message="cancel_reservation to 2")
    assert st.sent_to(4, "cancel_reservation", m) == []

    st.fault(3)  # C++ evses[2] connector 1 FAULTED: the last station-wide one goes
    st.wait_updates([(0, "Removed"), (3, "Removed")], base)

    st.fault(1)  # C++ evses[0] connector 1 FAULTED
    st.wait_updates([(0, "Removed"), (3, "Removed"), (2, "Removed")], base)

    m = st.mark()
    st.fault(4)  # C++ evses[3] FAULTED: its own reservation is cancelled
    st.wait_updates([(0, "Removed"), (3, "Removed"), (2, "Removed"), (1, "Removed")], base)
    wait_until(lambda: st.sent_to(4, "cancel_reservation", m), message="cancel_reservation to 4")
    assert [st.exists(f"TOKEN_{i}") for i in (2, 3)] == [NOT_RESERVED] * 2
    assert st.exists("TOKEN_0", 2) == NOT_RESERVED
    assert st.exists("TOKEN_1", 4) == NOT_RESERVED


def test_reservation_evse_unavailable(station: Callable[..., Station]) -> None:
    """EVSE 2 disabled: two station-wide cCCS2 fit; everything disabled: Unavailable."""
    st = station(FOUR_MIXED)
    st.disable(2, 1)
    st.disable(2, 2)
    assert st.create(None, "cCCS2") == A
    assert st.create(None, "cCCS2") == A
    assert st.create(None, "cCCS2") == O
    base = len(st.updates())

    for evse_id, connector_id in ((1, 1), (1, 2), (3, 1), (3, 2), (4, 2)):
        st.disable(evse_id, connector_id)
    # Ours, beyond the C++ test: the reservations that can no longer be honoured are removed.
    st.wait_updates([(1, "Removed"), (0, "Removed")], base)
    assert st.create(None, "cCCS2") == U


def test_reservation_specific_evse_unavailable(station: Callable[..., Station]) -> None:
    """Both connectors of EVSE 2 (C++ 1) disabled: reserving it answers Unavailable."""
    st = station(TWO_COMBINED)
    st.disable(2, 1)
    st.disable(2, 2)
    assert st.create(2, "cCCS2") == U
    st.check_placed()


def test_reservation_specific_evse_faulted(station: Callable[..., Station]) -> None:
    """A faulted EVSE answers Faulted."""
    st = station(TWO_COMBINED)
    st.fault(1)
    assert st.create(1, "cCCS2") == F
    st.fault(2)
    assert st.create(2, "cCCS2") == F
    st.check_placed()


def test_reservation_evse_faulted(station: Callable[..., Station]) -> None:
    """EVSE 2 faulted: two station-wide cCCS2 fit; everything faulted: Faulted."""
    st = station(FOUR_MIXED)
    st.fault(2)
    assert st.create(None, "cCCS2") == A
    assert st.create(None, "cCCS2") == A
    assert st.create(None, "cCCS2") == O
    base = len(st.updates())

    for evse_id in (1, 3, 4):
        st.fault(evse_id)
    st.wait_updates([(1, "Removed"), (0, "Removed")], base)
    assert st.create(None, "cCCS2") == F


def test_reservation_evse_unavailable_and_faulted(station: Callable[..., Station]) -> None:
    """One EVSE faulted, the rest disabled: Faulted wins over Unavailable."""
    st = station(FOUR_MIXED)
    st.fault(2)
    assert st.create(None, "cCCS2") == A
    assert st.create(None, "cCCS2") == A
    assert st.create(None, "cCCS2") == O
    base = len(st.updates())

    for evse_id, connector_id in ((1, 1), (1, 2), (3, 1), (3, 2), (4, 2)):
        st.disable(evse_id, connector_id)
    st.wait_updates([(1, "Removed"), (0, "Removed")], base)
    assert st.create(None, "cCCS2") == F


def test_reservation_connector_all_faulted(station: Callable[..., Station]) -> None:
    """C++ EVSEs 0 and 3 -> 1 and 2, both faulted: Faulted."""
    st = station(TWO_COMBINED)
    st.fault(1)
    st.fault(2)
    assert st.create(None, "cCCS2") == F
    st.check_placed()


def test_reservation_connector_unavailable(station: Callable[..., Station]) -> None:
    """Some connectors disabled/faulted; once one reservation exists the others are Occupied.

    C++ faults only connector 1 of EVSE 1 (-> 2), whose connector 0 is already disabled;
    the EVSE-wide fault here also marks that one faulted, which changes no answer (the
    refusals are Occupied because a reservation exists).
    """
    st = station([CCS_TYPE2, [(1, "cCCS1"), (2, "cType1")], CCS_TYPE2])
    st.disable(1, 1)
    st.disable(2, 1)
    st.fault(2)
    assert st.create(None, "cCCS2") == A
    assert st.create(None, "cType2") == O
    assert st.create(None, "cCCS1") == O
    assert st.create(None, "cType1") == O
    st.check_placed()


# =============================================================================================
# reservation_tests.cpp: expiry, cancel, overwrite, token matching
# =============================================================================================


def test_reservation_in_the_past(station: Callable[..., Station]) -> None:
    """An expiry time two hours ago is Rejected, and nothing is reserved or announced."""
    st = station([[(1, "cCCS2")]])
    assert st.create(None, "cCCS2", expiry=rfc3339(-timedelta(hours=2))) == R
    assert st.create(1, "cCCS2", expiry=rfc3339(-timedelta(hours=2))) == R
    assert st.exists("TOKEN_0") == NOT_RESERVED
    assert st.exists("TOKEN_1", 1) == NOT_RESERVED
    st.check_placed()
    assert st.updates() == []


def test_reservation_timer(station: Callable[..., Station]) -> None:
    """A reservation expires at its expiry_time: reservation_update Expired, the EVSE released.

    Station-wide first, then the same id for the EVSE (the C++ test reuses the id).
    """
    st = station([CCS_TYPE2])
    start = time.monotonic()
    assert st.reserve(0, "TOKEN_0", None, "cCCS2", expiry=rfc3339(timedelta(seconds=1))) == A
    assert st.exists("TOKEN_0") == FOR_TOKEN
    # One station-wide reservation, one free EVSE: the EVSE is held for it.
    wait_until(lambda: st.sent_to(1, "reserve") == [{"reservation_id": -1}], message="reserve -1")
    st.wait_updates([(0, "Placed"), (0, "Expired")])
    assert time.monotonic() - start > 0.5  # not at once: at the expiry time
    assert st.exists("TOKEN_0") == NOT_RESERVED
    wait_until(lambda: len(st.sent_to(1, "cancel_reservation")) == 1, message="hold released")

    m = st.mark()
    start = time.monotonic()
    assert st.reserve(0, "TOKEN_0", 1, "cCCS2", expiry=rfc3339(timedelta(seconds=1))) == A
    assert st.exists("TOKEN_0", 1) == FOR_TOKEN
    st.wait_updates([(0, "Placed"), (0, "Expired"), (0, "Placed"), (0, "Expired")])
    assert time.monotonic() - start > 0.5
    assert st.exists("TOKEN_0", 1) == NOT_RESERVED
    # The EVSE manager was told of the reservation, then that it is over.
    wait_until(lambda: [c for e, c, _ in st.sent_snapshot()[m:] if e == 1]
               == ["reserve", "cancel_reservation"], message="reserve then cancel_reservation")
    assert st.sent_to(1, "reserve", m) == [{"reservation_id": 0}]


def test_cancel_reservation(station: Callable[..., Station]) -> None:
    """cancel_reservation answers whether the id existed; an EVSE's manager is told.

    No reservation_update for a cancellation from outside (EVerest sends none to OCPP).
    """
    st = station(TWO_COMBINED)
    assert st.create(None, "cType2") == A
    assert st.create(None, "cType2") == A
    assert st.create(None, "cType2") == O
    assert st.cancel(5) is False
    assert st.cancel(1) is True
    assert st.exists("TOKEN_1") == NOT_RESERVED
    assert st.exists("TOKEN_0") == FOR_TOKEN
    assert st.create(2, "cType2") == A  # id 3, C++ evse 1
    m = st.mark()
    assert st.cancel(3) is True  # it was for EVSE 2
    wait_until(lambda: st.sent_to(2, "cancel_reservation", m) == [{}],
               message="cancel_reservation to EVSE 2")
    assert st.exists("TOKEN_3", 2) == NOT_RESERVED
    assert st.cancel(3) is False
    assert [s for _, s in st.updates()] == ["Placed"] * 3


def test_overwrite_reservation(station: Callable[..., Station]) -> None:
    """The same reservation made twice (C++ EVSE 5 -> 1): both Accepted, no cancellation."""
    st = station([CCS_TYPE2])
    assert st.reserve(0, "TOKEN_0", 1, "cType2") == A
    assert st.reserve(0, "TOKEN_0", 1, "cType2") == A
    st.barrier()
    assert st.updates() == [(0, "Placed"), (0, "Placed")]
    assert st.sent_to(1, "reserve") == [{"reservation_id": 0}, {"reservation_id": 0}]
    assert st.sent_to(1, "cancel_reservation") == []
    assert st.exists("TOKEN_0", 1) == FOR_TOKEN


def test_matches_reserved_identifier(station: Callable[..., Station]) -> None:
    """Token / parent token matching, seen through exists_reservation (C++ EVSE n -> n+1)."""
    st = station(THREE_COMBINED)
    assert st.create(None, "cType2", parent="PARENT_TOKEN_0") == A  # id 0
    assert st.create(2, "cType2", parent="PARENT_TOKEN_2") == A  # id 1
    assert st.create(3, "cType2", parent="PARENT_TOKEN_3") == A  # id 2
    ex = st.exists
    assert ex("TOKEN_0") == FOR_TOKEN
    assert ex("TOKEN_0", group="WRONG_PARENT_TOKEN") == FOR_TOKEN
    assert ex("WRONG_TOKEN") == NOT_RESERVED
    # EVSE 2's own reservation counts, not the station-wide one.
    assert ex("TOKEN_0", 2) == FOR_OTHER_WITH_PARENT
    assert ex("TOKEN_1", 3) == FOR_OTHER_WITH_PARENT
    assert ex("WRONG_TOKEN", group="PARENT_TOKEN_0") == FOR_TOKEN
    assert ex("WRONG_TOKEN", group="WRONG_PARENT_TOKEN") == NOT_RESERVED
    assert ex("TOKEN_1", 2) == FOR_TOKEN
    assert ex("TOKEN_NOK", 2) == FOR_OTHER_WITH_PARENT
    assert ex("TOKEN_NOK", 2, "PARENT_TOKEN_2") == FOR_TOKEN
    assert ex("TOKEN_NOK", 2, "PARENT_TOKEN_NOK") == FOR_OTHER
    st.check_placed()


def _two_with_parents(st: Station, global_parent: str | None, evse_parent: str | None) -> None:
    assert st.create(None, "cType2", parent=global_parent) == A
    assert st.create(2, "cType2", parent=evse_parent) == A


def test_has_reservation_parent_id(station: Callable[..., Station]) -> None:
    """Both reservations carry a parent token (C++ EVSE 1 -> 2, 0 -> 1, 2 -> 3)."""
    st = station(TWO_COMBINED)
    _two_with_parents(st, "PARENT_TOKEN_0", "PARENT_TOKEN_2")
    assert st.exists("SOMEONE", 2) == FOR_OTHER_WITH_PARENT  # has_reservation_parent_id(1)
    assert st.walk_in_validated(1) is True  # (0) / (nullopt): the station-wide one's parent
    assert st.exists("SOMEONE", 3) == NOT_RESERVED  # (2): no such EVSE


def test_has_reservation_parent_id_no_parent_token(station: Callable[..., Station]) -> None:
    """No parent tokens anywhere."""
    st = station(TWO_COMBINED)
    _two_with_parents(st, None, None)
    assert st.exists("SOMEONE", 2) == FOR_OTHER
    assert st.walk_in_validated(1) is False
    assert st.exists("SOMEONE", 3) == NOT_RESERVED


def test_has_reservation_parent_id_evse_reservation_parent_token(
        station: Callable[..., Station]) -> None:
    """Only the EVSE-specific reservation has a parent token."""
    st = station(TWO_COMBINED)
    _two_with_parents(st, None, "PARENT_TOKEN_2")
    assert st.exists("SOMEONE", 2) == FOR_OTHER_WITH_PARENT
    assert st.walk_in_validated(1) is False
    assert st.exists("SOMEONE", 3) == NOT_RESERVED


def test_has_reservation_parent_id_global_reservation_parent_token(
        station: Callable[..., Station]) -> None:
    """Only the station-wide reservation has a parent token."""
    st = station(TWO_COMBINED)
    _two_with_parents(st, "PARENT_TOKEN_0", None)
    assert st.exists("SOMEONE", 2) == FOR_OTHER
    assert st.walk_in_validated(1) is True
    assert st.exists("SOMEONE", 3) == NOT_RESERVED


def test_on_reservation_used(station: Callable[..., Station]) -> None:
    """A reserving token taking an EVSE uses its reservation up, without reservation_update.

    ``on_reservation_used(id)`` -> token TOKEN_<id> presented at EVSE 1; its authorization is
    withdrawn again so the EVSE is as free as in the C++ test.
    """
    st = station(TWO_COMBINED)

    def use(rid: int) -> None:
        value = f"TOKEN_{rid}"
        m = st.mark()
        st.swipe(value, [1])
        st.expect(value, [PROCESSING, ACCEPTED, USED_TO_START])
        wait_until(lambda: st.responses(1, value, m), message="authorize_response")
        result = st.responses(1, value, m)[0]
        assert result["authorization_status"] == "Accepted"
        assert result["reservation_id"] == rid
        assert st.exists(value) == NOT_RESERVED
        assert st.withdraw(1) == "Accepted"

    assert st.create(None, "cType2") == A
    assert st.create(None, "cType2") == A
    assert st.create(None, "cType2") == O
    use(1)
    assert st.create(None, "cType2") == A  # id 3
    assert st.create(None, "cType2") == O
    assert st.create(2, "cType2") == O
    use(0)
    use(3)
    assert st.create(2, "cCCS2") == A
    assert st.create(None, "cCCS2") == A
    st.check_placed()
    assert [s for _, s in st.updates()] == ["Placed"] * 5  # nothing on use


def test_store_load_reservations(station: Callable[..., Station]) -> None:
    """Reservations come back after a restart, with no update for them."""
    st = station(TWO_COMBINED)
    assert st.create(2, "cCCS2") == A
    assert st.create(None, "cCCS2") == A
    base = len(st.updates())
    st.restart()
    assert st.exists("TOKEN_0", 2) == FOR_TOKEN
    assert st.exists("TOKEN_1") == FOR_TOKEN
    assert st.create(2, "cCCS2") == O  # EVSE 2 is still held
    st.barrier()
    assert st.updates()[base:] == []


def test_store_load_evse_specific_reservation_without_global(station: Callable[..., Station]) -> None:
    """reservation_tests.cpp store_load_evse_specific_reservation_without_global (EVerest
    #2293): an EVSE-specific reservation alone comes back after a restart, and its EVSE
    manager is told again."""
    st = station(TWO_COMBINED)
    assert st.create(2, "cCCS2") == A  # C++ evse 1
    base = len(st.updates())
    m = st.mark()
    st.restart()
    assert st.exists("TOKEN_0", 2) == FOR_TOKEN
    wait_until(lambda: [a["reservation_id"] for a in st.sent_to(2, "reserve", m)] == [0],
               message="the restored reservation sent to EVSE 2 again")
    assert st.create(2, "cCCS2") == O  # EVSE 2 is still held
    st.barrier()
    assert st.updates()[base:] == []


def test_cancelled_reservation_not_resurrected_after_reload(station: Callable[..., Station]) -> None:
    """reservation_tests.cpp cancelled_reservation_not_resurrected_after_reload (EVerest
    #2293): the last reservation cancelled, a restart brings nothing back."""
    st = station(TWO_COMBINED)
    assert st.create(2, "cCCS2") == A  # reservation id 0
    assert st.cancel(0) is True
    assert st.exists("TOKEN_0", 2) == NOT_RESERVED
    m = st.mark()
    st.restart()
    assert st.exists("TOKEN_0", 2) == NOT_RESERVED
    assert st.exists("TOKEN_0") == NOT_RESERVED
    assert st.charging_possible(2)
    assert st.sent_to(2, "reserve", m) == []


def test_store_load_reservations_connector_unavailable(station: Callable[..., Station]) -> None:
    """EVSE 2 (C++ 1) faulted when the module comes back: its reservation is cancelled
    (Removed, and its manager told), the station-wide one is kept.

    The fault is raised while the module asks the EVSEs ``get_evse``, i.e. before it is
    ready, as the C++ test faults the connectors before ``load_reservations``.
    """
    st = station(TWO_COMBINED)
    assert st.create(2, "cCCS2") == A
    assert st.create(None, "cCCS2") == A
    base = len(st.updates())
    st.rig.stop_module()
    evse2 = st.rig.evse(2)

    def fault_once() -> None:
        evse2.before_get_evse = None
        evse2.fault()

    evse2.before_get_evse = fault_once
    m = st.mark()
    st.rig.start_module()
    st.wait_updates([(0, "Removed")], base)
    wait_until(lambda: st.sent_to(2, "cancel_reservation", m), message="cancel_reservation to 2")
    assert st.exists("TOKEN_0", 2) == NOT_RESERVED
    assert st.exists("TOKEN_1") == FOR_TOKEN
    assert st.updates()[base:] == [(0, "Removed")]


# =============================================================================================
# reservation_tests.cpp: station-wide reservations holding EVSEs (reserve -1)
# =============================================================================================


def reserves(st: Station) -> list[tuple[int, int]]:
    return [(e, a["reservation_id"]) for e, c, a in st.sent_snapshot() if c == "reserve"]


def cancels(st: Station, since: int = 0) -> list[int]:
    return [e for e, c, _ in st.sent_snapshot()[since:] if c == "cancel_reservation"]


def test_check_evses_to_reserve_scenario_1(station: Callable[..., Station]) -> None:
    """EVSE 2 reserved, one station-wide reservation: EVSE 1 is held with id -1."""
    st = station(TWO_COMBINED)
    st.barrier()
    assert reserves(st) == []
    assert st.create(2, "cCCS2") == A
    st.barrier()
    assert reserves(st) == [(2, 0)]
    assert st.create(None, "cCCS2") == A
    st.barrier()
    assert reserves(st) == [(2, 0), (1, -1)]
    assert cancels(st) == []


def test_check_evses_to_reserve_scenario_2(station: Callable[..., Station]) -> None:
    """Two station-wide reservations, two EVSEs: both held with id -1."""
    st = station(TWO_COMBINED)
    assert st.create(None, "cCCS2") == A
    st.barrier()
    assert reserves(st) == []
    assert st.create(None, "cCCS2") == A
    st.barrier()
    assert sorted(reserves(st)) == [(1, -1), (2, -1)]
    assert cancels(st) == []


def test_check_evses_to_reserve_scenario_3(station: Callable[..., Station]) -> None:
    """[cCCS2], [cCCS2, cType2]: a station-wide cType2 reservation holds EVSE 2."""
    st = station([[(1, "cCCS2")], CCS_TYPE2])
    st.barrier()
    assert reserves(st) == []
    assert st.create(None, "cType2") == A
    st.barrier()
    assert reserves(st) == [(2, -1)]


def test_check_evses_to_reserve_scenario_4(station: Callable[..., Station]) -> None:
    """EVSE 1 plugged in: a station-wide reservation holds EVSE 2 until EVSE 1 is free."""
    st = station(TWO_COMBINED)
    st.plug_in(1)
    st.barrier()
    assert reserves(st) == []
    assert st.create(None, "cType2") == A
    st.barrier()
    assert reserves(st) == [(2, -1)]
    m = st.mark()
    st.session_finished(1)  # plugged_in = false
    wait_until(lambda: cancels(st, m) == [2], message="EVSE 2 released")
    st.barrier()
    assert cancels(st) == [2]
    assert reserves(st) == [(2, -1)]


def test_check_evses_to_reserve_scenario_5(station: Callable[..., Station]) -> None:
    """A transaction on EVSE 2's cCCS2 connector: EVSE 1 is held until the session ends."""
    st = station(TWO_COMBINED)
    st.transaction_started(2, {"id_token": id_token("SOMEONE"), "authorization_type": "RFID"},
                          connector_id=1)
    st.barrier()
    assert reserves(st) == []
    assert st.create(None, "cType2") == A
    st.barrier()
    assert reserves(st) == [(1, -1)]
    m = st.mark()
    st.session_finished(2, connector_id=1)
    wait_until(lambda: cancels(st, m) == [1], message="EVSE 1 released")
    st.barrier()
    assert cancels(st) == [1]
    assert reserves(st) == [(1, -1)]


def test_check_evses_to_reserve_scenario_6(station: Callable[..., Station]) -> None:
    """Two station-wide reservations hold both EVSEs; cancelling one releases both."""
    st = station(TWO_COMBINED)
    assert st.create(None, "cCCS2") == A
    st.barrier()
    assert reserves(st) == []
    assert st.create(None, "cCCS2") == A
    st.barrier()
    assert sorted(reserves(st)) == [(1, -1), (2, -1)]
    m = st.mark()
    assert st.cancel(0) is True
    st.barrier()
    assert sorted(cancels(st, m)) == [1, 2]
    assert sorted(reserves(st)) == [(1, -1), (2, -1)]


# =============================================================================================
# auth_tests.cpp reservation scenarios (the AuthTest fixture)
# =============================================================================================

VALID_TOKEN_1 = "VALID_RFID_1"  # same parent id as VALID_TOKEN_3
VALID_TOKEN_2 = "VALID_RFID_2"
VALID_TOKEN_3 = "VALID_RFID_3"
PARENT_ID_TOKEN = "PARENT_RFID"
AUTH_EVSES: list[list[tuple[int, str]]] = [[(1, "cCCS2")], [(1, "sType2"), (2, "cCCS2")]]
AUTH_CONFIG = {"selection_algorithm": "PlugEvents", "connection_timeout": 10,
               "plug_in_timeout_enabled": True,
               "prioritize_authorization_over_stopping_transaction": False}


# (EVerest's fixture has CONNECTION_TIMEOUT 1 s; see the station fixture for why 10 s here.)


def auth_validators() -> list[ValidatorSpec]:
    """The C++ validate callback: validator_a says Invalid, validator_b knows three tokens."""
    return [ValidatorSpec("validator_a"), ValidatorSpec("validator_b", tokens=[
        {"id_token": VALID_TOKEN_1, "parent_id_token": PARENT_ID_TOKEN, "status": "Accepted"},
        {"id_token": VALID_TOKEN_3, "parent_id_token": PARENT_ID_TOKEN, "status": "Accepted"},
        {"id_token": VALID_TOKEN_2, "status": "Accepted"},
    ])]


@pytest.fixture
def auth_station(station: Callable[..., Station]) -> Callable[[], Station]:
    return lambda: station(AUTH_EVSES, config=AUTH_CONFIG, validators=auth_validators())


def test_reservation(auth_station: Callable[[], Station]) -> None:
    """auth_tests.cpp test_reservation: EVSE 1 reserved for an hour is Accepted."""
    st = auth_station()
    assert st.reserve(1, VALID_TOKEN_1, 1, "cCCS2") == A
    st.check_placed()
    assert st.exists(VALID_TOKEN_1, 1) == FOR_TOKEN


def test_reservation_in_past(auth_station: Callable[[], Station]) -> None:
    """auth_tests.cpp test_reservation_in_past: an expiry an hour ago is Rejected."""
    st = auth_station()
    assert st.reserve(1, VALID_TOKEN_1, 1, "cCCS2", expiry=rfc3339(-timedelta(hours=1))) == R
    st.check_placed()
    assert st.exists(VALID_TOKEN_1, 1) == NOT_RESERVED


def test_reservation_with_authorization(auth_station: Callable[[], Station]) -> None:
    """auth_tests.cpp test_reservation_with_authorization: the reserved EVSE refuses another
    card (NotAtThisTime, token Rejected) and takes the reserving card, using the reservation."""
    st = auth_station()
    assert st.reserve(1, VALID_TOKEN_2, 1, "cCCS2") == A
    st.event(1, "ReservationStart")
    st.plug_in(1)

    st.swipe(VALID_TOKEN_1, [1, 2])  # not valid for the reservation
    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, REJECTED])
    wait_until(lambda: st.responses(1, VALID_TOKEN_1), message="authorize_response")
    assert {r["authorization_status"] for r in st.responses(1, VALID_TOKEN_1)} == {"NotAtThisTime"}
    assert st.exists(VALID_TOKEN_2, 1) == FOR_TOKEN

    st.swipe(VALID_TOKEN_2, [1, 2])  # valid for the reservation
    st.expect(VALID_TOKEN_2, [PROCESSING, ACCEPTED, USED_TO_START])
    wait_until(lambda: st.responses(1, VALID_TOKEN_2), message="authorize_response")
    granted = st.responses(1, VALID_TOKEN_2)
    assert [(r["authorization_status"], r.get("reservation_id")) for r in granted] == [("Accepted", 1)]
    assert st.responses(2, VALID_TOKEN_2) == []
    assert st.exists(VALID_TOKEN_2, 1) == NOT_RESERVED  # used up
    assert st.updates() == [(1, "Placed")]


def test_reservation_with_authorization_global_reservations(
        auth_station: Callable[[], Station]) -> None:
    """auth_tests.cpp test_reservation_with_authorization_global_reservations: a station-wide
    sType2 reservation keeps the only sType2 EVSE (2) from another card."""
    st = auth_station()
    assert st.reserve(1, VALID_TOKEN_2, None, "sType2") == A
    st.event(2, "ReservationStart")
    st.barrier()
    assert reserves(st) == [(2, -1)]  # held: the only EVSE with sType2

    st.swipe(VALID_TOKEN_1, [1, 2])
    wait_until(lambda: ACCEPTED in st.statuses(VALID_TOKEN_1), message="Accepted")
    st.plug_in(2)
    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, REJECTED])
    assert all(r["authorization_status"] != "Accepted" for r in st.responses(2, VALID_TOKEN_1))
    assert all(r["authorization_status"] != "Accepted" for r in st.responses(1, VALID_TOKEN_1))
    assert st.exists(VALID_TOKEN_2) == FOR_TOKEN


def test_reservation_with_authorization_global_reservations_2(
        auth_station: Callable[[], Station]) -> None:
    """auth_tests.cpp test_reservation_with_authorization_global_reservations_2: two
    station-wide reservations, two EVSEs: a third card is refused before validation."""
    st = auth_station()
    assert st.reserve(1, VALID_TOKEN_2, None, "cCCS2") == A
    assert st.reserve(2, VALID_TOKEN_1, None, "cCCS2") == A
    st.event(2, "ReservationStart")
    st.barrier()
    assert sorted(reserves(st)) == [(1, -1), (2, -1)]

    st.swipe(VALID_TOKEN_3, [1, 2])
    st.plug_in(2, reason="Authorized")
    st.expect(VALID_TOKEN_3, [PROCESSING, REJECTED])  # NO_CONNECTOR_AVAILABLE
    st.barrier()
    assert st.sent_to(1, "authorize_response") == st.sent_to(2, "authorize_response") == []
    assert st.exists(VALID_TOKEN_2) == FOR_TOKEN
    assert st.exists(VALID_TOKEN_1) == FOR_TOKEN


def test_complete_event_flow(auth_station: Callable[[], Station]) -> None:
    """auth_tests.cpp test_complete_event_flow: a whole session, then the next one.

    Ours on top: during the transaction EVSE 1 cannot be reserved (Occupied).
    """
    st = auth_station()
    st.plug_in(1)
    token = st.swipe(VALID_TOKEN_1, [1])
    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START])
    st.transaction_started(1, token)
    assert st.reserve(1, VALID_TOKEN_2, 1, "cCCS2") == O
    st.event(1, "ChargingPausedEV")
    st.event(1, "ChargingStarted")
    st.event(1, "TransactionFinished", transaction_finished={
        "meter_value": {"energy_Wh_import": {"total": 1000}}, "id_tag": token})
    st.session_finished(1)
    m = st.mark()

    st.plug_in(1)
    st.swipe(VALID_TOKEN_1, [1])
    st.expect(VALID_TOKEN_1, [PROCESSING, ACCEPTED, USED_TO_START,
                              PROCESSING, ACCEPTED, USED_TO_START])
    wait_until(lambda: st.responses(1, VALID_TOKEN_1, m), message="authorize_response")
    assert [r["authorization_status"] for r in st.responses(1, VALID_TOKEN_1, m)] == ["Accepted"]
    assert st.sent_to(2, "authorize_response") == []
    assert st.updates() == []


def test_reservation_with_parent_id_tag(auth_station: Callable[[], Station]) -> None:
    """auth_tests.cpp test_reservation_with_parent_id_tag: a card of the reservation's group
    (parent id token) takes the reserved EVSE; another card does not."""
    st = auth_station()
    assert st.reserve(1, VALID_TOKEN_1, 1, parent=PARENT_ID_TOKEN) == A
    st.event(1, "ReservationStart")
    st.plug_in(1)

    st.swipe(VALID_TOKEN_2, [1, 2])  # not valid for the reservation
    st.expect(VALID_TOKEN_2, [PROCESSING, ACCEPTED, REJECTED])
    assert all(r["authorization_status"] != "Accepted" for r in st.responses(1, VALID_TOKEN_2))

    st.swipe(VALID_TOKEN_3, [1, 2])  # valid: same parent id token
    st.expect(VALID_TOKEN_3, [PROCESSING, ACCEPTED, USED_TO_START])
    wait_until(lambda: st.responses(1, VALID_TOKEN_3), message="authorize_response")
    assert [(r["authorization_status"], r.get("reservation_id"))
            for r in st.responses(1, VALID_TOKEN_3)] == [("Accepted", 1)]
    assert st.exists(VALID_TOKEN_1, 1) == NOT_RESERVED  # used up by the group member


def test_case_insensitive_reservation_matching(auth_station: Callable[[], Station]) -> None:
    """auth_tests.cpp test_case_insensitive_reservation_matching: "VALID_rfid_2" reserved,
    "valid_RFID_2" presented."""
    st = auth_station()
    assert st.reserve(1, "VALID_rfid_2", 1, "cCCS2") == A
    assert st.exists("valid_RFID_2", 1) == FOR_TOKEN
    assert st.exists("valid_RFID_2") == NOT_RESERVED  # no station-wide one
    st.event(1, "ReservationStart")
    st.plug_in(1)

    st.swipe("valid_RFID_2", [1, 2])
    st.expect("valid_RFID_2", [PROCESSING, ACCEPTED, USED_TO_START])
    wait_until(lambda: st.responses(1, "valid_RFID_2"), message="authorize_response")
    assert [(r["authorization_status"], r.get("reservation_id"))
            for r in st.responses(1, "valid_RFID_2")] == [("Accepted", 1)]
    assert st.exists("VALID_RFID_2", 1) == NOT_RESERVED


# =============================================================================================
# Ours: what the issue asks beyond the C++ scenarios
# =============================================================================================


def test_evse_manager_refusing_reserve_rejects_the_reservation(
        station: Callable[..., Station]) -> None:
    """An EVSE manager answering ``reserve`` false: Rejected, and the reservation is gone."""
    st = station([[(1, "cCCS2")], [(1, "cCCS2")]])
    st.rig.evse(1).reserve_answer = False
    assert st.reserve(7, "TOKEN_7", 1, "cCCS2") == R
    assert st.exists("TOKEN_7", 1) == NOT_RESERVED
    assert st.exists("SOMEONE", 1) == NOT_RESERVED
    assert st.sent_to(1, "reserve") == [{"reservation_id": 7}]
    st.barrier()
    assert [s for _, s in st.updates()] == []  # never Placed
    st.rig.evse(1).reserve_answer = True
    assert st.reserve(8, "TOKEN_8", 1, "cCCS2") == A  # the EVSE is free again
    assert st.exists("TOKEN_8", 1) == FOR_TOKEN
    st.barrier()
    assert st.updates() == [(8, "Placed")]


def test_same_id_replaces_the_reservation(station: Callable[..., Station]) -> None:
    """reserve_now with an id that exists replaces it (OCPP H01.FR.01), here on another EVSE."""
    st = station([[(1, "cCCS2")], [(1, "cCCS2")], [(1, "cCCS2")]])
    assert st.reserve(7, "OLD", 1) == A
    assert st.reserve(7, "NEW", 2) == A
    assert st.exists("OLD", 1) == NOT_RESERVED
    assert st.exists("NEW", 2) == FOR_TOKEN
    assert st.exists("NEW", 1) == NOT_RESERVED
    assert st.reserve(8, "OTHER", 1) == A  # EVSE 1 is free again
    # Station-wide replacing EVSE-specific, then a refused replacement removes it too.
    assert st.reserve(7, "NEW", None) == A
    assert st.exists("NEW") == FOR_TOKEN
    assert st.exists("NEW", 2) == NOT_RESERVED
    assert st.reserve(7, "NEW", 1) == O  # EVSE 1 is held by id 8
    assert st.exists("NEW") == NOT_RESERVED
    assert st.cancel(7) is False


def test_station_wide_reservations_hold_the_remaining_evses(
        station: Callable[..., Station]) -> None:
    """As many station-wide reservations as free EVSEs: those EVSEs get ``reserve`` -1, and
    ``cancel_reservation`` once that stops being so; walk-ins are turned away meanwhile."""
    st = station([[(1, "cCCS2")], [(1, "cCCS2")], [(1, "cCCS2")]])
    assert st.reserve(1, "A_TOKEN", 1) == A
    assert st.reserve(2, "B_TOKEN", None) == A
    st.barrier()
    assert reserves(st) == [(1, 1)]  # two free EVSEs, one station-wide: nothing held
    assert st.reserve(3, "C_TOKEN", None) == A
    st.barrier()
    assert sorted(reserves(st)) == [(1, 1), (2, -1), (3, -1)]
    assert st.charging_possible(2) is False
    assert st.charging_possible(3) is False

    m = st.mark()
    assert st.cancel(1) is True  # EVSE 1 free again: three free EVSEs for two reservations
    st.barrier()
    assert sorted(cancels(st, m)) == [1, 2, 3]  # 1: its reservation; 2, 3: released
    assert st.charging_possible(2) is True
    assert st.exists("B_TOKEN") == st.exists("C_TOKEN") == FOR_TOKEN


def test_exists_reservation_all_four_statuses(station: Callable[..., Station]) -> None:
    """NotReserved, ReservedForToken, ReservedForOtherToken, ...AndHasParentToken, with
    group_id_token, case-insensitively."""
    st = station([[(1, "cCCS2")], [(1, "cCCS2")], [(1, "cCCS2")]])
    assert st.reserve(1, "MEMBER", 2, parent="GROUP_A") == A
    assert st.reserve(2, "LONER", 3) == A
    assert st.reserve(3, "ANYWHERE", None) == A
    ex = st.exists
    assert ex("MEMBER", 1) == NOT_RESERVED  # EVSE 1 holds no reservation
    assert ex("member", 2) == FOR_TOKEN
    assert ex("SOMEONE", 2, "group_a") == FOR_TOKEN  # by group
    assert ex("SOMEONE", 2) == FOR_OTHER_WITH_PARENT  # a group token might still match
    assert ex("SOMEONE", 2, "GROUP_B") == FOR_OTHER
    assert ex("SOMEONE", 3) == FOR_OTHER
    assert ex("anywhere") == FOR_TOKEN  # no evse_id: the station-wide reservations
    assert ex("SOMEONE") == NOT_RESERVED
    assert ex("SOMEONE", 9) == NOT_RESERVED  # no such EVSE


def test_reservation_end_event_cancels_the_reservation(station: Callable[..., Station]) -> None:
    """A ReservationEnd session event from the EVSE manager ends its reservation: Removed."""
    st = station([[(1, "cCCS2")], [(1, "cCCS2")]])
    assert st.reserve(4, "TOKEN_4", 1) == A
    st.event(1, "ReservationStart")
    st.event(2, "ReservationEnd")  # EVSE 2 has none: nothing happens
    st.barrier()
    assert st.updates() == [(4, "Placed")]
    m = st.mark()
    st.event(1, "ReservationEnd")
    st.wait_updates([(4, "Placed"), (4, "Removed")])
    wait_until(lambda: st.sent_to(1, "cancel_reservation", m) == [{}],
               message="cancel_reservation to EVSE 1")
    assert st.exists("TOKEN_4", 1) == NOT_RESERVED
    assert st.cancel(4) is False
