"""ReservationBook: every scenario of EVerest's reservation_tests.cpp, plus our own.

The first part ports ``modules/EVSE/Auth/tests/reservation_tests.cpp`` one test per
``TEST_F``, same name, same steps and expectations, with EVerest's evse ids (they start at
0 there). Where the C++ test pokes at private members (clearing maps to fake a restart),
the port builds a fresh book on the same store instead. Timers run on a FakeClock.
"""

from __future__ import annotations

import random
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from auth_module.core.clock import FakeClock
from auth_module.core.evse import Connector, ConnectorEvent, ConnectorState, EvseState
from auth_module.core.reservations import (
    Ended,
    ReservationBook,
    arrival_orders,
    every_arrival_order_fits,
    more_important_state,
    no_car_can_be_shut_out,
    parse_expiry,
)
from auth_module.store import ReservationStore
from auth_module.types import (
    ConnectorTypeEnum,
    Reservation,
    ReservationCheckStatus,
    ReservationEndReason,
    ReservationResult,
)

pytestmark = pytest.mark.timeout(10)

T = ConnectorTypeEnum
R = ReservationResult
S = ConnectorState
E = ConnectorEvent
CANCELLED = ReservationEndReason.Cancelled
EXPIRED = ReservationEndReason.Expired


def rfc3339(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


class Station:
    """The C++ fixture: evses, a book, a recorded cancel callback, reservation factory."""

    def __init__(self, store: ReservationStore | None = None) -> None:
        self.evses: dict[int, EvseState] = {}
        self.clock = FakeClock()
        self.lock = threading.RLock()
        self.store = store
        self.calls: list[tuple[int | None, int, ReservationEndReason, bool]] = []
        self.book = ReservationBook(self.evses, self.clock, self.lock, store, self._record)
        self._next_id = 0

    def _record(self, ended: Ended) -> None:
        """What the owner is told of a reservation that ended (all of it notified)."""
        self.calls.append((ended.evse_id, ended.reservation_id, ended.reason, True))

    def load(self) -> None:
        for ended in self.book.load()[1]:
            self._record(ended)

    def cancel_for_evse(self, evse_id: int) -> bool:
        ended = self.book.cancel_for_evse(evse_id)
        if ended is not None:
            self._record(ended)
        return ended is not None

    def end(self, rid: int, reason: ReservationEndReason) -> tuple[bool, int | None]:
        """Cancel and notify, as the owner does for a cancellation it reports."""
        found, evse_id = self.book.cancel(rid, reason)
        if found:
            self._record(Ended(evse_id, rid, reason))
        return found, evse_id

    def add_connector(self, evse_id: int, connector_id: int, ctype: ConnectorTypeEnum) -> None:
        connector = Connector(connector_id, ctype)
        if evse_id in self.evses:
            self.evses[evse_id].connectors.append(connector)
        else:
            self.evses[evse_id] = EvseState(evse_id, index=len(self.evses), connectors=[connector])

    def create(self, connector_type: ConnectorTypeEnum | None, hours: float = 1) -> Reservation:
        rid = self._next_id
        self._next_id += 1
        return Reservation(
            reservation_id=rid,
            id_token=f"TOKEN_{rid}",
            expiry_time=rfc3339(self.clock.utcnow() + timedelta(hours=hours)),
            connector_type=connector_type,
        )

    def reserve(self, evse_id: int | None, ctype: ConnectorTypeEnum | None) -> ReservationResult:
        return self.book.make_reservation(evse_id, self.create(ctype))

    def connector(self, evse_id: int, index: int) -> Connector:
        return self.evses[evse_id].connectors[index]

    def submit(self, evse_id: int, index: int, event: ConnectorEvent) -> None:
        self.connector(evse_id, index).submit(event)

    def changed(self, state: ConnectorState, evse_id: int, connector_id: int) -> None:
        for ended in self.book.on_connector_state_changed(state, evse_id, connector_id):
            self._record(ended)

    def counts(self) -> tuple[int, int]:
        """(EVSE-specific, station-wide) reservations in the book."""
        items = self.book.reservations()
        return sum(e is not None for e, _ in items), sum(e is None for e, _ in items)


@pytest.fixture
def st() -> Station:
    return Station()


def three_evses_one_ccs_two_combined(st: Station, ids: tuple[int, int, int] = (0, 1, 2)) -> None:
    a, b, c = ids
    st.add_connector(a, 0, T.cCCS2)
    st.add_connector(b, 0, T.cCCS2)
    st.add_connector(b, 1, T.cType2)
    st.add_connector(c, 0, T.cCCS2)
    st.add_connector(c, 1, T.cType2)


def evses_ccs_and_type2(st: Station, ids: tuple[int, ...] = (0, 1)) -> None:
    """EVSEs with a cCCS2 connector (id 0) and a cType2 connector (id 1) each."""
    for evse_id in ids:
        st.add_connector(evse_id, 0, T.cCCS2)
        st.add_connector(evse_id, 1, T.cType2)


def four_evses_mixed(st: Station) -> None:
    """Three combined EVSEs (0-2) and EVSE 3 with a single cType2 connector (id 1)."""
    evses_ccs_and_type2(st, (0, 1, 2))
    st.add_connector(3, 1, T.cType2)


# =========================================================================================
# Port of reservation_tests.cpp
# =========================================================================================


def test_global_reservation_scenario_01(st: Station) -> None:
    """Port of reservation_tests.cpp global_reservation_scenario_01."""
    three_evses_one_ccs_two_combined(st)
    assert st.reserve(None, T.cCCS2) == R.Accepted
    assert st.reserve(None, T.cCCS2) == R.Accepted
    assert st.reserve(None, T.cCCS2) == R.Accepted
    assert st.reserve(None, T.cCCS2) == R.Occupied
    assert st.reserve(None, T.cType2) == R.Occupied


def test_global_reservation_scenario_02(st: Station) -> None:
    """Port of reservation_tests.cpp global_reservation_scenario_02."""
    three_evses_one_ccs_two_combined(st)
    assert st.reserve(None, T.cType2) == R.Accepted
    assert st.reserve(None, T.cCCS2) == R.Accepted
    assert st.reserve(None, T.cType2) == R.Occupied
    assert st.reserve(None, T.cCCS2) == R.Occupied


def test_global_reservation_scenario_03(st: Station) -> None:
    """Port of reservation_tests.cpp global_reservation_scenario_03."""
    three_evses_one_ccs_two_combined(st)
    assert st.reserve(None, T.cType2) == R.Accepted
    assert st.reserve(None, T.cType2) == R.Accepted
    assert st.reserve(None, T.cCCS2) == R.Occupied
    assert st.reserve(None, T.cType2) == R.Occupied


def test_global_reservation_scenario_04(st: Station) -> None:
    """Port of reservation_tests.cpp global_reservation_scenario_04."""
    three_evses_one_ccs_two_combined(st, (0, 4, 7))
    assert st.reserve(None, T.cCCS2) == R.Accepted
    assert st.reserve(None, T.cType2) == R.Accepted
    assert st.reserve(None, T.cType2) == R.Occupied


def test_global_reservation_scenario_05(st: Station) -> None:
    """Port of reservation_tests.cpp global_reservation_scenario_05."""
    st.add_connector(0, 0, T.cCCS2)
    st.add_connector(1, 0, T.cCCS2)
    st.add_connector(2, 0, T.cCCS2)
    st.add_connector(2, 1, T.cType2)
    st.add_connector(3, 5, T.cCCS2)
    assert st.reserve(None, T.cCCS2) == R.Accepted
    assert st.reserve(None, T.cType2) == R.Occupied
    assert st.reserve(None, T.cCCS2) == R.Accepted


def test_global_reservation_scenario_06(st: Station) -> None:
    """Port of reservation_tests.cpp global_reservation_scenario_06."""
    st.add_connector(0, 0, T.cCCS2)
    st.add_connector(1, 0, T.cCCS2)
    st.add_connector(2, 0, T.cCCS2)
    st.add_connector(2, 1, T.cType2)
    assert st.reserve(None, T.cType2) == R.Accepted
    assert st.reserve(None, T.cType2) == R.Occupied
    assert st.reserve(None, T.cCCS2) == R.Occupied


def test_global_reservation_scenario_07(st: Station) -> None:
    """Port of reservation_tests.cpp global_reservation_scenario_07."""
    st.add_connector(0, 0, T.cCCS2)
    st.add_connector(0, 1, T.sType3)
    assert st.reserve(None, T.cType2) == R.Rejected
    assert st.reserve(None, T.Unknown) == R.Accepted


def test_global_reservation_scenario_08(st: Station) -> None:
    """Port of reservation_tests.cpp global_reservation_scenario_08."""
    evses_ccs_and_type2(st, (0, 1, 2))
    assert st.reserve(None, T.cCCS2) == R.Accepted
    assert st.reserve(None, T.Unknown) == R.Accepted
    assert st.reserve(None, T.Unknown) == R.Accepted
    assert st.reserve(None, T.cCCS2) == R.Occupied
    assert st.reserve(None, T.Unknown) == R.Occupied


def test_global_reservation_scenario_09(st: Station) -> None:
    """Port of reservation_tests.cpp global_reservation_scenario_09."""
    evses_ccs_and_type2(st, (0, 1, 2))
    assert st.reserve(None, T.Unknown) == R.Accepted
    assert st.reserve(None, T.cCCS2) == R.Accepted
    assert st.reserve(None, T.cType2) == R.Accepted
    assert st.reserve(None, T.cCCS2) == R.Occupied


def test_global_reservation_scenario_10(st: Station) -> None:
    """Port of reservation_tests.cpp global_reservation_scenario_10."""
    for evse_id in (0, 2, 5):
        st.add_connector(evse_id, 0, T.Unknown)
        st.add_connector(evse_id, 1, T.Unknown)
    assert st.reserve(None, T.cCCS2) == R.Accepted
    assert st.reserve(None, T.Unknown) == R.Accepted
    assert st.reserve(None, T.Other3Ph) == R.Accepted
    assert st.reserve(None, T.cCCS2) == R.Occupied


def test_global_reservation_scenario_11(st: Station) -> None:
    """Port of reservation_tests.cpp global_reservation_scenario_11."""
    for evse_id in (0, 1, 2):
        st.add_connector(evse_id, 0, T.cCCS2)
    assert st.reserve(None, T.cCCS2) == R.Accepted
    assert st.reserve(None, T.Unknown) == R.Accepted
    assert st.reserve(None, T.cType2) == R.Rejected
    assert st.reserve(None, T.cCCS2) == R.Accepted
    assert st.reserve(None, T.cCCS2) == R.Occupied


def test_global_reservation_scenario_12(st: Station) -> None:
    """Port of reservation_tests.cpp global_reservation_scenario_12."""
    st.add_connector(0, 0, T.cCCS2)
    st.add_connector(0, 1, T.cType2)
    st.add_connector(1, 0, T.cType2)
    st.add_connector(1, 1, T.cTesla)
    st.add_connector(2, 0, T.cTesla)
    st.add_connector(2, 1, T.cCCS2)
    assert st.reserve(None, T.cType1) == R.Rejected
    assert st.reserve(None, T.cCCS2) == R.Accepted
    assert st.reserve(None, T.cType2) == R.Accepted
    assert st.reserve(None, T.cTesla) == R.Occupied
    assert st.reserve(None, T.cCCS2) == R.Occupied
    assert st.reserve(None, T.cType2) == R.Occupied


def test_get_all_possible_orders() -> None:
    """Port of reservation_tests.cpp get_all_possible_orders (order of the list aside)."""
    assert arrival_orders([T.cCCS2]) == [(T.cCCS2,)]
    assert arrival_orders([T.cCCS2, T.cCCS2]) == [(T.cCCS2, T.cCCS2)]
    orders = arrival_orders([T.cCCS2, T.cCCS2, T.cCCS1])
    assert len(orders) == 3
    assert set(orders) == {
        (T.cCCS2, T.cCCS2, T.cCCS1),
        (T.cCCS2, T.cCCS1, T.cCCS2),
        (T.cCCS1, T.cCCS2, T.cCCS2),
    }


def test_get_all_possible_orders2() -> None:
    """Port of reservation_tests.cpp get_all_possible_orders2 (order of the list aside)."""
    assert arrival_orders([T.cType1]) == [(T.cType1,)]
    assert set(arrival_orders([T.cType1, T.Pan])) == {(T.cType1, T.Pan), (T.Pan, T.cType1)}
    orders = arrival_orders([T.cType1, T.Pan, T.cCCS1])
    assert len(orders) == 6
    assert set(orders) == {
        (T.cType1, T.Pan, T.cCCS1),
        (T.Pan, T.cCCS1, T.cType1),
        (T.Pan, T.cType1, T.cCCS1),
        (T.cType1, T.cCCS1, T.Pan),
        (T.cCCS1, T.Pan, T.cType1),
        (T.cCCS1, T.cType1, T.Pan),
    }


def test_specific_evse_scenario_01(st: Station) -> None:
    """Port of reservation_tests.cpp specific_evse_scenario_01."""
    evses_ccs_and_type2(st, (0, 1, 2))
    assert st.reserve(1, T.cCCS1) == R.Rejected
    assert st.reserve(1, T.cCCS2) == R.Accepted
    assert st.reserve(1, T.cCCS2) == R.Occupied
    assert st.reserve(0, T.cCCS2) == R.Accepted
    assert st.reserve(2, T.cCCS2) == R.Accepted
    assert st.reserve(2, T.cCCS2) == R.Occupied


def test_specific_evse_scenario_02(st: Station) -> None:
    """Port of reservation_tests.cpp specific_evse_scenario_02."""
    st.add_connector(0, 0, T.cCCS2)
    st.add_connector(1, 1, T.cType2)
    assert st.reserve(1, T.cCCS2) == R.Rejected
    assert st.reserve(1, T.cType2) == R.Accepted
    assert st.reserve(1, T.cCCS2) == R.Occupied
    assert st.reserve(0, T.cCCS2) == R.Accepted
    assert st.reserve(0, T.cCCS2) == R.Occupied


def _type2_ccs_combo(st: Station) -> None:
    st.add_connector(0, 1, T.cType2)
    st.add_connector(1, 0, T.cCCS2)
    st.add_connector(1, 1, T.cType2)
    st.add_connector(2, 0, T.cCCS2)


def test_global_reservation_specific_evse_combination_scenario_01(st: Station) -> None:
    """Port of reservation_tests.cpp global_reservation_specific_evse_combination_scenario_01."""
    _type2_ccs_combo(st)
    assert st.reserve(None, T.cType2) == R.Accepted
    assert st.reserve(1, T.cCCS2) == R.Accepted
    assert st.reserve(1, T.cCCS2) == R.Occupied
    assert st.reserve(1, T.cType2) == R.Occupied
    assert st.reserve(2, T.cCCS2) == R.Accepted
    assert st.reserve(0, T.cType2) == R.Occupied
    assert st.reserve(1, T.cCCS2) == R.Occupied
    assert st.reserve(None, T.cType2) == R.Occupied
    assert st.reserve(None, T.cCCS2) == R.Occupied


def test_global_reservation_specific_evse_combination_scenario_02(st: Station) -> None:
    """Port of reservation_tests.cpp global_reservation_specific_evse_combination_scenario_02."""
    _type2_ccs_combo(st)
    assert st.reserve(None, T.cType2) == R.Accepted
    assert st.reserve(1, T.cCCS2) == R.Accepted
    assert st.reserve(1, T.cCCS2) == R.Occupied
    assert st.reserve(1, T.cType2) == R.Occupied
    assert st.reserve(None, T.cType2) == R.Occupied
    assert st.reserve(None, T.cCCS2) == R.Accepted
    assert st.reserve(None, T.cType2) == R.Occupied
    assert st.reserve(None, T.cCCS2) == R.Occupied
    assert st.reserve(2, T.cCCS2) == R.Occupied
    assert st.reserve(0, T.cType2) == R.Occupied
    assert st.reserve(1, T.cCCS2) == R.Occupied


def test_global_reservation_specific_evse_combination_scenario_03(st: Station) -> None:
    """Port of reservation_tests.cpp global_reservation_specific_evse_combination_scenario_03."""
    four_evses_mixed(st)
    assert st.reserve(2, T.cType2) == R.Accepted
    assert st.reserve(2, T.cCCS2) == R.Occupied
    assert st.reserve(1, T.cType2) == R.Accepted
    assert st.reserve(None, T.cCCS2) == R.Accepted
    assert st.reserve(None, T.cCCS2) == R.Occupied
    assert st.reserve(None, T.cType2) == R.Occupied
    assert st.reserve(3, T.cType2) == R.Accepted


def test_check_charging_possible_global_specific_reservations_scenario_01(st: Station) -> None:
    """Port of reservation_tests.cpp
    check_charging_possible_global_specific_reservations_scenario_01."""
    four_evses_mixed(st)
    b = st.book
    assert [b.is_charging_possible(e) for e in (0, 2, 1, 3)] == [True] * 4
    assert not b.is_charging_possible(4)
    assert st.reserve(2, T.cType2) == R.Accepted
    assert [b.is_charging_possible(e) for e in (0, 2, 1, 3)] == [True, False, True, True]
    assert st.reserve(1, T.cType2) == R.Accepted
    assert [b.is_charging_possible(e) for e in (0, 2, 1, 3)] == [True, False, False, True]
    assert st.reserve(None, T.cCCS2) == R.Accepted
    assert not b.is_charging_possible(0)
    assert b.is_charging_possible(3)
    assert st.reserve(3, T.cType2) == R.Accepted
    assert [b.is_charging_possible(e) for e in (0, 1, 2, 3)] == [False] * 4


def test_check_charging_possible_global_specific_reservations_scenario_02(st: Station) -> None:
    """Port of reservation_tests.cpp
    check_charging_possible_global_specific_reservations_scenario_02."""
    _type2_ccs_combo(st)
    b = st.book
    assert [b.is_charging_possible(e) for e in (0, 1, 2)] == [True] * 3
    assert st.reserve(None, T.cType2) == R.Accepted
    assert [b.is_charging_possible(e) for e in (0, 1, 2)] == [True] * 3
    assert st.reserve(1, T.cCCS2) == R.Accepted
    assert [b.is_charging_possible(e) for e in (0, 1, 2)] == [False, False, True]
    assert st.reserve(None, T.cCCS2) == R.Accepted
    assert [b.is_charging_possible(e) for e in (0, 1, 2)] == [False] * 3


def test_is_evse_reserved(st: Station) -> None:
    """Port of reservation_tests.cpp is_evse_reserved."""
    evses_ccs_and_type2(st)
    assert not st.book.is_evse_reserved(0)
    assert not st.book.is_evse_reserved(1)
    st.reserve(None, T.cCCS2)
    assert not st.book.is_evse_reserved(0)
    assert not st.book.is_evse_reserved(1)
    st.reserve(1, T.cCCS2)
    assert not st.book.is_evse_reserved(0)
    assert st.book.is_evse_reserved(1)


def test_change_availability_scenario_01(st: Station) -> None:
    """Port of reservation_tests.cpp change_availability_scenario_01."""
    four_evses_mixed(st)
    for _ in range(4):
        assert st.reserve(None, T.cType2) == R.Accepted

    st.submit(1, 1, E.DISABLE)
    st.changed(st.connector(1, 1).connector_state, 1, 1)
    assert st.calls == [(None, 3, CANCELLED, True)]

    st.calls.clear()
    st.submit(3, 0, E.FAULTED)
    st.changed(st.connector(3, 0).connector_state, 3, 1)
    assert st.calls == [(None, 2, CANCELLED, True)]

    st.calls.clear()
    st.submit(3, 0, E.ERROR_CLEARED)
    st.changed(st.connector(3, 0).connector_state, 3, 1)
    st.submit(2, 1, E.DISABLE)
    st.changed(st.connector(2, 1).connector_state, 2, 1)
    assert st.calls == []

    st.submit(0, 1, E.FAULTED)
    st.changed(st.connector(0, 1).connector_state, 0, 1)
    assert st.calls == [(None, 1, CANCELLED, True)]


def test_change_availability_scenario_02(st: Station) -> None:
    """Port of reservation_tests.cpp change_availability_scenario_02."""
    four_evses_mixed(st)
    assert st.reserve(1, T.cType2) == R.Accepted
    assert st.reserve(3, T.cType2) == R.Accepted
    assert st.reserve(None, T.cType2) == R.Accepted
    assert st.reserve(None, T.cType2) == R.Accepted

    st.submit(1, 1, E.DISABLE)
    st.changed(st.connector(1, 1).connector_state, 1, 1)
    assert st.calls == [(1, 0, CANCELLED, True)]

    st.calls.clear()
    st.submit(2, 1, E.FAULTED)
    st.changed(st.connector(2, 1).connector_state, 2, 1)
    assert st.calls == [(None, 3, CANCELLED, True)]

    st.calls.clear()
    st.submit(0, 1, E.FAULTED)
    st.changed(st.connector(0, 1).connector_state, 0, 1)
    assert st.calls == [(None, 2, CANCELLED, True)]

    st.calls.clear()
    st.submit(3, 0, E.FAULTED)
    st.changed(st.connector(3, 0).connector_state, 3, 1)
    assert st.calls == [(3, 1, CANCELLED, True)]


def test_reservation_evse_unavailable(st: Station) -> None:
    """Port of reservation_tests.cpp reservation_evse_unavailable."""
    four_evses_mixed(st)
    st.submit(1, 0, E.DISABLE)
    st.changed(st.connector(1, 0).connector_state, 1, 0)
    st.submit(1, 1, E.DISABLE)
    st.changed(st.connector(1, 1).connector_state, 1, 1)

    assert st.reserve(None, T.cCCS2) == R.Accepted
    assert st.reserve(None, T.cCCS2) == R.Accepted
    assert st.reserve(None, T.cCCS2) == R.Occupied

    # As in the C++ test, some calls report connector 0's state for connector 1.
    st.submit(0, 0, E.DISABLE)
    st.changed(st.connector(0, 0).connector_state, 0, 0)
    st.submit(0, 1, E.DISABLE)
    st.changed(st.connector(0, 0).connector_state, 0, 1)
    st.submit(2, 0, E.DISABLE)
    st.changed(st.connector(2, 0).connector_state, 2, 0)
    st.submit(2, 1, E.DISABLE)
    st.changed(st.connector(2, 0).connector_state, 2, 1)
    st.submit(3, 0, E.DISABLE)
    st.changed(st.connector(3, 0).connector_state, 3, 1)

    assert st.reserve(None, T.cCCS2) == R.Unavailable


def test_reservation_specific_evse_unavailable(st: Station) -> None:
    """Port of reservation_tests.cpp reservation_specific_evse_unavailable."""
    evses_ccs_and_type2(st)
    st.submit(1, 0, E.DISABLE)
    st.submit(1, 1, E.DISABLE)
    assert st.reserve(1, T.cCCS2) == R.Unavailable


def test_reservation_specific_evse_faulted(st: Station) -> None:
    """Port of reservation_tests.cpp reservation_specific_evse_faulted."""
    evses_ccs_and_type2(st)
    for i in (0, 1):
        st.submit(0, i, E.FAULTED)
        st.changed(st.connector(0, i).connector_state, 0, i)
    assert st.reserve(0, T.cCCS2) == R.Faulted
    for i in (0, 1):
        st.submit(1, i, E.FAULTED)
        st.changed(st.connector(1, i).connector_state, 1, i)
    assert st.reserve(1, T.cCCS2) == R.Faulted


def _set_all_but_evse1(st: Station, event: ConnectorEvent) -> None:
    for evse_id in (0, 2):
        for i in (0, 1):
            st.submit(evse_id, i, event)
            st.changed(st.connector(evse_id, i).connector_state, evse_id, i)
    st.submit(3, 0, event)
    st.changed(st.connector(3, 0).connector_state, 3, 1)


def test_reservation_evse_faulted(st: Station) -> None:
    """Port of reservation_tests.cpp reservation_evse_faulted."""
    four_evses_mixed(st)
    for i in (0, 1):
        st.submit(1, i, E.FAULTED)
        st.changed(st.connector(1, i).connector_state, 1, i)
    assert st.reserve(None, T.cCCS2) == R.Accepted
    assert st.reserve(None, T.cCCS2) == R.Accepted
    assert st.reserve(None, T.cCCS2) == R.Occupied
    _set_all_but_evse1(st, E.FAULTED)
    assert st.reserve(None, T.cCCS2) == R.Faulted


def test_reservation_evse_unavailable_and_faulted(st: Station) -> None:
    """Port of reservation_tests.cpp reservation_evse_unavailable_and_faulted."""
    four_evses_mixed(st)
    for i in (0, 1):
        st.submit(1, i, E.FAULTED)
        st.changed(st.connector(1, i).connector_state, 1, i)
    assert st.reserve(None, T.cCCS2) == R.Accepted
    assert st.reserve(None, T.cCCS2) == R.Accepted
    assert st.reserve(None, T.cCCS2) == R.Occupied
    _set_all_but_evse1(st, E.DISABLE)
    assert st.reserve(None, T.cCCS2) == R.Faulted


def test_reservation_connector_all_faulted(st: Station) -> None:
    """Port of reservation_tests.cpp reservation_connector_all_faulted."""
    evses_ccs_and_type2(st, (0, 3))
    for evse_id in (0, 3):
        for i in (0, 1):
            st.submit(evse_id, i, E.FAULTED)
    assert st.reserve(None, T.cCCS2) == R.Faulted


def test_reservation_connector_unavailable(st: Station) -> None:
    """Port of reservation_tests.cpp reservation_connector_unavailable."""
    st.add_connector(0, 0, T.cCCS2)
    st.add_connector(0, 1, T.cType2)
    st.add_connector(1, 0, T.cCCS1)
    st.add_connector(1, 1, T.cType1)
    st.add_connector(2, 0, T.cCCS2)
    st.add_connector(2, 1, T.cType2)
    st.submit(0, 0, E.DISABLE)
    st.submit(1, 0, E.DISABLE)
    st.submit(1, 1, E.FAULTED)
    assert st.reserve(None, T.cCCS2) == R.Accepted
    assert st.reserve(None, T.cType2) == R.Occupied
    assert st.reserve(None, T.cCCS1) == R.Occupied
    assert st.reserve(None, T.cType1) == R.Occupied


def test_reservation_in_the_past(st: Station) -> None:
    """Port of reservation_tests.cpp reservation_in_the_past."""
    st.add_connector(0, 0, T.cCCS2)
    reservation = st.create(T.cCCS2, hours=-2)
    assert st.book.make_reservation(None, reservation) == R.Rejected
    assert st.book.reservations() == []


def test_reservation_timer(st: Station) -> None:
    """Port of reservation_tests.cpp reservation_timer (FakeClock instead of sleep)."""
    evses_ccs_and_type2(st, (0,))
    reservation = st.create(T.cCCS2)
    reservation.expiry_time = rfc3339(st.clock.utcnow() + timedelta(seconds=1))
    assert st.book.make_reservation(None, reservation) == R.Accepted
    st.clock.advance(2)
    assert st.calls == [(None, 0, EXPIRED, True)]

    st.calls.clear()
    reservation.expiry_time = rfc3339(st.clock.utcnow() + timedelta(seconds=1))
    assert st.book.make_reservation(0, reservation) == R.Accepted
    st.clock.advance(2)
    assert st.calls == [(0, 0, EXPIRED, True)]


def test_cancel_reservation(st: Station) -> None:
    """Port of reservation_tests.cpp cancel_reservation."""
    evses_ccs_and_type2(st)
    assert st.reserve(None, T.cType2) == R.Accepted
    assert st.reserve(None, T.cType2) == R.Accepted
    assert st.reserve(None, T.cType2) == R.Occupied
    assert st.book.cancel(5, CANCELLED) == (False, None)
    assert st.book.cancel(1, CANCELLED) == (True, None)
    assert st.reserve(1, T.cType2) == R.Accepted
    assert st.book.cancel(3, CANCELLED) == (True, 1)
    assert st.calls == []


def test_overwrite_reservation(st: Station) -> None:
    """Port of reservation_tests.cpp overwrite_reservation."""
    st.add_connector(5, 0, T.cCCS2)
    st.add_connector(5, 1, T.cType2)
    reservation = st.create(T.cType2)
    assert st.book.make_reservation(5, reservation) == R.Accepted
    assert st.book.make_reservation(5, reservation) == R.Accepted
    assert st.calls == []


def test_matches_reserved_identifier(st: Station) -> None:
    """Port of reservation_tests.cpp matches_reserved_identifier."""
    evses_ccs_and_type2(st, (0, 1, 2))
    r1 = st.create(T.cType2)
    r1.parent_id_token = "PARENT_TOKEN_0"
    r2 = st.create(T.cType2)
    r2.parent_id_token = "PARENT_TOKEN_2"
    r3 = st.create(T.cType2)
    r3.parent_id_token = "PARENT_TOKEN_3"
    assert st.book.make_reservation(None, r1) == R.Accepted
    assert st.book.make_reservation(1, r2) == R.Accepted
    assert st.book.make_reservation(2, r3) == R.Accepted

    m = st.book.matches_reserved_identifier
    assert m(r1.id_token, None, None) == 0
    assert m(r1.id_token, None, "WRONG_PARENT_TOKEN") == 0
    assert m("WRONG_TOKEN", None, None) is None
    assert m(r1.id_token, 1, None) is None
    assert m(r2.id_token, 2, None) is None
    assert m("WRONG_TOKEN", None, "PARENT_TOKEN_0") == 0
    assert m("WRONG_TOKEN", None, "WRONG_PARENT_TOKEN") is None
    assert m(r2.id_token, 1, None) == 1
    assert m("TOKEN_NOK", 1, None) is None
    assert m(r2.id_token, 2, None) is None
    assert m("TOKEN_NOK", 1, "PARENT_TOKEN_2") == 1
    assert m("TOKEN_NOK", 1, "PARENT_TOKEN_NOK") is None


def _two_with_parents(st: Station, global_parent: str | None, evse_parent: str | None) -> None:
    evses_ccs_and_type2(st)
    r1 = st.create(T.cType2)
    r1.parent_id_token = global_parent
    r2 = st.create(T.cType2)
    r2.parent_id_token = evse_parent
    assert st.book.make_reservation(None, r1) == R.Accepted
    assert st.book.make_reservation(1, r2) == R.Accepted


def test_has_reservation_parent_id(st: Station) -> None:
    """Port of reservation_tests.cpp has_reservation_parent_id."""
    _two_with_parents(st, "PARENT_TOKEN_0", "PARENT_TOKEN_2")
    h = st.book.has_reservation_parent_id
    assert (h(None), h(1), h(0), h(2)) == (True, True, True, False)


def test_has_reservation_parent_id_no_parent_token(st: Station) -> None:
    """Port of reservation_tests.cpp has_reservation_parent_id_no_parent_token."""
    _two_with_parents(st, None, None)
    h = st.book.has_reservation_parent_id
    assert (h(None), h(1), h(0), h(2)) == (False, False, False, False)


def test_has_reservation_parent_id_evse_reservation_parent_token(st: Station) -> None:
    """Port of reservation_tests.cpp has_reservation_parent_id_evse_reservation_parent_token."""
    _two_with_parents(st, None, "PARENT_TOKEN_2")
    h = st.book.has_reservation_parent_id
    assert (h(None), h(1), h(0), h(2)) == (False, True, False, False)


def test_has_reservation_parent_id_global_reservation_parent_token(st: Station) -> None:
    """Port of reservation_tests.cpp has_reservation_parent_id_global_reservation_parent_token."""
    _two_with_parents(st, "PARENT_TOKEN_0", None)
    h = st.book.has_reservation_parent_id
    assert (h(None), h(1), h(0), h(2)) == (True, False, True, False)


def test_on_reservation_used(st: Station) -> None:
    """Port of reservation_tests.cpp on_reservation_used."""
    evses_ccs_and_type2(st)
    assert st.reserve(None, T.cType2) == R.Accepted
    assert st.reserve(None, T.cType2) == R.Accepted
    assert st.reserve(None, T.cType2) == R.Occupied
    st.book.on_reservation_used(1)
    assert st.reserve(None, T.cType2) == R.Accepted
    assert st.reserve(None, T.cType2) == R.Occupied
    assert st.reserve(1, T.cType2) == R.Occupied
    st.book.on_reservation_used(0)
    st.book.on_reservation_used(2)
    st.book.on_reservation_used(3)
    assert st.reserve(1, T.cCCS2) == R.Accepted
    assert st.reserve(None, T.cCCS2) == R.Accepted
    assert st.calls == []


def test_store_load_reservations(tmp_path: Path) -> None:
    """Port of reservation_tests.cpp store_load_reservations (a fresh book is the restart)."""
    store = ReservationStore(tmp_path / "reservations.json")
    st = Station(store)
    evses_ccs_and_type2(st)
    assert st.counts() == (0, 0)
    st.load()
    assert st.counts() == (0, 0)
    assert st.reserve(1, T.cCCS2) == R.Accepted
    assert st.reserve(None, T.cCCS2) == R.Accepted
    assert st.counts() == (1, 1)
    assert st.clock.pending() == 2

    restarted = Station(store)
    evses_ccs_and_type2(restarted)
    assert restarted.counts() == (0, 0)
    assert restarted.clock.pending() == 0
    restarted.load()
    assert restarted.counts() == (1, 1)
    assert restarted.clock.pending() == 2
    assert restarted.calls == []


def test_store_load_evse_specific_reservation_without_global(tmp_path: Path) -> None:
    """Port of reservation_tests.cpp store_load_evse_specific_reservation_without_global
    (EVerest PR #2293): an EVSE-specific reservation alone survives a restart."""
    store = ReservationStore(tmp_path / "reservations.json")
    st = Station(store)
    evses_ccs_and_type2(st)
    st.load()
    assert st.counts() == (0, 0)

    assert st.reserve(1, T.cCCS2) == R.Accepted  # no station-wide one to trigger a write
    assert st.counts() == (1, 0)

    restarted = Station(store)
    evses_ccs_and_type2(restarted)
    assert restarted.counts() == (0, 0)
    restarted.load()
    assert restarted.counts() == (1, 0)
    assert restarted.clock.pending() == 1  # its expiry timer is back
    assert [(e, r.reservation_id) for e, r in restarted.book.reservations()] == [(1, 0)]
    assert restarted.calls == []


def test_cancelled_reservation_not_resurrected_after_reload(tmp_path: Path) -> None:
    """Port of reservation_tests.cpp cancelled_reservation_not_resurrected_after_reload
    (EVerest PR #2293): cancelling the last reservation empties the store."""
    store = ReservationStore(tmp_path / "reservations.json")
    st = Station(store)
    evses_ccs_and_type2(st)
    st.load()
    assert st.counts() == (0, 0)

    assert st.reserve(1, T.cCCS2) == R.Accepted  # reservation id 0
    assert st.counts() == (1, 0)
    assert st.book.cancel(0, CANCELLED) == (True, 1)
    assert st.counts() == (0, 0)

    restarted = Station(store)
    evses_ccs_and_type2(restarted)
    restarted.load()
    assert restarted.counts() == (0, 0)
    assert restarted.clock.pending() == 0
    assert restarted.calls == []


def test_store_load_reservations_connector_unavailable(tmp_path: Path) -> None:
    """Port of reservation_tests.cpp store_load_reservations_connector_unavailable."""
    store = ReservationStore(tmp_path / "reservations.json")
    st = Station(store)
    evses_ccs_and_type2(st)
    st.load()
    assert st.counts() == (0, 0)
    assert st.reserve(1, T.cCCS2) == R.Accepted
    assert st.reserve(None, T.cCCS2) == R.Accepted
    assert st.counts() == (1, 1)
    assert st.clock.pending() == 2

    restarted = Station(store)
    evses_ccs_and_type2(restarted)
    assert restarted.counts() == (0, 0)
    restarted.submit(1, 0, E.FAULTED)
    restarted.changed(restarted.connector(1, 0).connector_state, 3, 0)  # unknown evse, as in C++
    restarted.submit(1, 1, E.FAULTED)
    restarted.changed(restarted.connector(1, 1).connector_state, 1, 1)
    restarted.load()
    assert restarted.counts() == (0, 1)
    assert restarted.clock.pending() == 1
    assert restarted.calls == [(1, 0, CANCELLED, True)]
    # Ours, not EVerest's: the store now holds only what was re-made.
    assert [(e, r.reservation_id) for e, r in store.load()] == [(None, 1)]


def test_check_evses_to_reserve_scenario_1(st: Station) -> None:
    """Port of reservation_tests.cpp check_evses_to_reserve_scenario_1."""
    evses_ccs_and_type2(st)
    assert st.book.check_global_reservations() == (set(), set())
    assert st.reserve(1, T.cCCS2) == R.Accepted
    assert st.book.check_global_reservations() == (set(), set())
    assert st.reserve(None, T.cCCS2) == R.Accepted
    assert st.book.check_global_reservations() == ({0}, set())


def test_check_evses_to_reserve_scenario_2(st: Station) -> None:
    """Port of reservation_tests.cpp check_evses_to_reserve_scenario_2."""
    evses_ccs_and_type2(st)
    assert st.book.check_global_reservations() == (set(), set())
    assert st.reserve(None, T.cCCS2) == R.Accepted
    assert st.book.check_global_reservations() == (set(), set())
    assert st.reserve(None, T.cCCS2) == R.Accepted
    assert st.book.check_global_reservations() == ({0, 1}, set())


def test_check_evses_to_reserve_scenario_3(st: Station) -> None:
    """Port of reservation_tests.cpp check_evses_to_reserve_scenario_3."""
    st.add_connector(0, 0, T.cCCS2)
    st.add_connector(1, 0, T.cCCS2)
    st.add_connector(1, 1, T.cType2)
    assert st.book.check_global_reservations() == (set(), set())
    assert st.reserve(None, T.cType2) == R.Accepted
    assert st.book.check_global_reservations() == ({1}, set())


def test_check_evses_to_reserve_scenario_4(st: Station) -> None:
    """Port of reservation_tests.cpp check_evses_to_reserve_scenario_4."""
    evses_ccs_and_type2(st)
    st.evses[0].plugged_in = True
    assert st.book.check_global_reservations() == (set(), set())
    assert st.reserve(None, T.cType2) == R.Accepted
    assert st.book.check_global_reservations() == ({1}, set())
    st.evses[0].plugged_in = False
    assert st.book.check_global_reservations() == (set(), {1})


def test_check_evses_to_reserve_scenario_5(st: Station) -> None:
    """Port of reservation_tests.cpp check_evses_to_reserve_scenario_5."""
    evses_ccs_and_type2(st)
    st.submit(1, 0, E.TRANSACTION_STARTED)
    assert st.book.check_global_reservations() == (set(), set())
    assert st.reserve(None, T.cType2) == R.Accepted
    assert st.book.check_global_reservations() == ({0}, set())
    st.submit(1, 0, E.SESSION_FINISHED)
    assert st.book.check_global_reservations() == (set(), {0})


def test_check_evses_to_reserve_scenario_6(st: Station) -> None:
    """Port of reservation_tests.cpp check_evses_to_reserve_scenario_6."""
    evses_ccs_and_type2(st)
    assert st.book.check_global_reservations() == (set(), set())
    first = st.create(T.cCCS2)
    assert st.book.make_reservation(None, first) == R.Accepted
    assert st.book.check_global_reservations() == (set(), set())
    assert st.reserve(None, T.cCCS2) == R.Accepted
    assert st.book.check_global_reservations() == ({0, 1}, set())
    st.book.cancel(first.reservation_id, CANCELLED)
    assert st.book.check_global_reservations() == (set(), {0, 1})


# =========================================================================================
# Our own
# =========================================================================================


def test_expiry_fires_on_fake_clock_and_reports_expired(st: Station) -> None:
    """The expiry timer ends the reservation at expiry_time, not a moment before."""
    evses_ccs_and_type2(st, (1,))
    reservation = st.create(T.cCCS2)
    reservation.expiry_time = rfc3339(st.clock.utcnow() + timedelta(seconds=30))
    assert st.book.make_reservation(1, reservation) == R.Accepted
    st.clock.advance(29)
    assert st.calls == [] and st.book.is_evse_reserved(1)
    st.clock.advance(1)
    assert st.calls == [(1, 0, EXPIRED, True)]
    assert not st.book.is_evse_reserved(1)
    assert st.clock.pending() == 0


def test_cancelled_reservation_timer_does_not_fire(st: Station) -> None:
    """Ending a reservation cancels its timer, so no late Expired follows."""
    evses_ccs_and_type2(st, (1,))
    assert st.reserve(1, T.cCCS2) == R.Accepted
    assert st.end(0, CANCELLED) == (True, 1)
    assert st.clock.pending() == 0
    st.clock.advance(7200)
    assert st.calls == [(1, 0, CANCELLED, True)]


def test_expiry_in_other_offset_and_z_suffix(st: Station) -> None:
    """RFC 3339 with an offset and with 'Z' both parse to the same instant."""
    assert parse_expiry("2026-01-01T13:00:00Z") == parse_expiry("2026-01-01T14:00:00+01:00")
    evses_ccs_and_type2(st, (1,))
    reservation = st.create(T.cCCS2)
    reservation.expiry_time = "2026-01-01T13:00:00+01:00"  # = 12:00Z, FakeClock's now
    assert st.book.make_reservation(1, reservation) == R.Accepted
    reservation.expiry_time = "not a time"
    assert st.book.make_reservation(1, reservation) == R.Rejected


def test_replace_by_same_id_moves_reservation(st: Station) -> None:
    """A reservation id already in the book is replaced (H01.FR.01), with no callback."""
    evses_ccs_and_type2(st, (1, 2))
    first = st.create(T.cCCS2)
    assert st.book.make_reservation(1, first) == R.Accepted
    moved = first.model_copy(update={"id_token": "OTHER"})
    assert st.book.make_reservation(2, moved) == R.Accepted
    assert [(e, r.id_token) for e, r in st.book.reservations()] == [(2, "OTHER")]
    assert st.clock.pending() == 1  # the old timer is gone
    assert st.calls == []


def test_replace_that_fails_still_removes_old(st: Station) -> None:
    """As in EVerest, the old reservation is gone even if its replacement is refused."""
    evses_ccs_and_type2(st, (1,))
    first = st.create(T.cCCS2)
    assert st.book.make_reservation(1, first) == R.Accepted
    assert st.book.make_reservation(7, first) == R.Rejected  # no EVSE 7
    assert st.book.reservations() == []
    assert st.clock.pending() == 0


def test_store_written_on_every_change_and_emptied(tmp_path: Path) -> None:
    """The store is rewritten on every change, also when the last reservation goes (EVerest
    does so too since #2293)."""
    store = ReservationStore(tmp_path / "r.json")
    st = Station(store)
    evses_ccs_and_type2(st, (1, 2))
    assert st.reserve(1, T.cCCS2) == R.Accepted  # stored at once (EVerest only since #2293)
    assert [(e, r.reservation_id) for e, r in store.load()] == [(1, 0)]
    assert st.reserve(None, T.cType2) == R.Accepted
    assert [(e, r.reservation_id) for e, r in store.load()] == [(1, 0), (None, 1)]
    st.book.on_reservation_used(0)
    assert [(e, r.reservation_id) for e, r in store.load()] == [(None, 1)]
    st.book.cancel(1, CANCELLED)
    assert store.load() == []
    assert '"reservations": []' in (tmp_path / "r.json").read_text()


def test_store_written_when_timer_expires(tmp_path: Path) -> None:
    """Expiry is a change too."""
    store = ReservationStore(tmp_path / "r.json")
    st = Station(store)
    evses_ccs_and_type2(st, (1,))
    assert st.reserve(None, T.cCCS2) == R.Accepted
    st.clock.advance(3600)
    assert store.load() == []


def test_load_expires_past_due_and_remakes_the_rest(tmp_path: Path) -> None:
    """After a restart: expired ones end as Expired, impossible ones as Cancelled."""
    store = ReservationStore(tmp_path / "r.json")
    now = FakeClock().utcnow()

    def res(rid: int, minutes: int, ctype: ConnectorTypeEnum | None = T.cCCS2) -> Reservation:
        expiry = rfc3339(now + timedelta(minutes=minutes))
        return Reservation(reservation_id=rid, id_token=f"T{rid}", expiry_time=expiry,
                           connector_type=ctype)

    store.save([(1, res(10, -5)), (2, res(11, 30)), (9, res(12, 30)), (None, res(13, 60, None))])
    st = Station(store)
    evses_ccs_and_type2(st, (1, 2, 3))
    st.load()
    assert st.calls == [(1, 10, EXPIRED, True), (9, 12, CANCELLED, True)]
    assert [(e, r.reservation_id) for e, r in st.book.reservations()] == [(2, 11), (None, 13)]
    assert [(e, r.reservation_id) for e, r in store.load()] == [(2, 11), (None, 13)]
    assert st.clock.pending() == 2
    st.calls.clear()
    st.clock.advance(30 * 60)
    assert st.calls == [(2, 11, EXPIRED, True)]


def test_load_without_store_is_a_no_op(st: Station) -> None:
    """No store configured: nothing to load, nothing to save."""
    st.load()
    assert st.book.reservations() == []


def test_check_all_four_statuses(st: Station) -> None:
    """exists_reservation answers, including group (parent) tokens."""
    evses_ccs_and_type2(st, (1, 2, 3))
    at_evse = st.create(T.cCCS2)
    at_evse.parent_id_token = "GROUP_A"
    assert st.book.make_reservation(2, at_evse) == R.Accepted
    station_wide = st.create(T.cCCS2)
    assert st.book.make_reservation(None, station_wide) == R.Accepted

    c = st.book.check
    Status = ReservationCheckStatus
    # EVSE 1 is not specifically reserved (EVerest's bug would check evse 1 for any evse id).
    assert c("TOKEN_0", 1, None) == Status.NotReserved
    assert c("token_0", 2, None) == Status.ReservedForToken  # case-insensitive
    assert c("SOMEONE", 2, "group_a") == Status.ReservedForToken  # via the group token
    assert c("SOMEONE", 2, None) == Status.ReservedForOtherTokenAndHasParentToken
    assert c("SOMEONE", 2, "GROUP_B") == Status.ReservedForOtherToken
    # Without an evse id: any reservation the token matches.
    assert c("TOKEN_1", None, None) == Status.ReservedForToken
    assert c("SOMEONE", None, None) == Status.NotReserved


def test_check_reserved_for_other_token_without_parent(st: Station) -> None:
    """A held EVSE whose reservation has no parent token: just another token's."""
    evses_ccs_and_type2(st, (1, 2))
    assert st.reserve(2, T.cCCS2) == R.Accepted
    assert st.book.check("SOMEONE", 2, None) == ReservationCheckStatus.ReservedForOtherToken


def test_specific_evse_plugged_in_or_occupied_is_occupied(st: Station) -> None:
    """A plugged-in EVSE or one with a connector in use cannot be reserved."""
    evses_ccs_and_type2(st, (1, 2))
    st.evses[1].plugged_in = True
    assert st.reserve(1, T.cCCS2) == R.Occupied
    st.submit(2, 1, E.TRANSACTION_STARTED)  # the cType2 one; the cCCS2 one is blocked too
    assert st.reserve(2, T.cCCS2) == R.Occupied


def test_specific_reservation_without_connector_type_fits_any(st: Station) -> None:
    """No connector type means any connector."""
    evses_ccs_and_type2(st, (1,))
    assert st.reserve(1, None) == R.Accepted


def test_connector_change_cancels_own_reservation_and_ignores_available(st: Station) -> None:
    """AVAILABLE never cancels; a fault on a connector of the reserved type does."""
    evses_ccs_and_type2(st, (1, 2))
    assert st.reserve(1, T.cCCS2) == R.Accepted
    st.changed(S.AVAILABLE, 1, 0)
    assert st.calls == []
    st.submit(1, 1, E.FAULTED)  # cType2: not the reserved type, and EVSE 1 still usable
    st.changed(st.connector(1, 1).connector_state, 1, 1)
    assert st.calls == []
    st.submit(1, 0, E.FAULTED)
    st.changed(st.connector(1, 0).connector_state, 1, 0)
    assert st.calls == [(1, 0, CANCELLED, True)]


def test_connector_change_for_unknown_connector_is_ignored(st: Station) -> None:
    """Unknown evse or connector id: logged and ignored."""
    evses_ccs_and_type2(st, (1,))
    assert st.reserve(1, T.cCCS2) == R.Accepted
    st.changed(S.FAULTED, 1, 99)
    st.changed(S.FAULTED, 42, 0)
    assert st.calls == [] and st.book.is_evse_reserved(1)


def test_cancel_for_evse(st: Station) -> None:
    """Cancelling by EVSE reports Cancelled through the callback when asked to."""
    evses_ccs_and_type2(st, (1, 2))
    assert st.reserve(2, T.cCCS2) == R.Accepted
    assert not st.cancel_for_evse(1)
    assert st.cancel_for_evse(2)
    assert st.calls == [(2, 0, CANCELLED, True)]
    assert not st.cancel_for_evse(2)


def test_more_important_state_ordering() -> None:
    """EVerest's get_new_connector_state: Occupied > Faulted > Unavailable, combined folded."""
    assert more_important_state(S.UNAVAILABLE, S.OCCUPIED) == S.OCCUPIED
    assert more_important_state(S.FAULTED, S.UNAVAILABLE) == S.FAULTED
    assert more_important_state(S.UNAVAILABLE, S.FAULTED) == S.FAULTED
    assert more_important_state(S.UNAVAILABLE, S.UNAVAILABLE_FAULTED) == S.FAULTED
    assert more_important_state(S.OCCUPIED, S.UNAVAILABLE_FAULTED) == S.OCCUPIED
    assert more_important_state(S.FAULTED, S.FAULTED_OCCUPIED) == S.OCCUPIED
    assert more_important_state(S.OCCUPIED, S.FAULTED) == S.OCCUPIED


def test_global_refusal_reports_occupied_when_plugged_in(st: Station) -> None:
    """With nothing reserved, a plugged-in EVSE still makes a refusal read Occupied."""
    st.add_connector(1, 0, T.cCCS2)
    st.evses[1].plugged_in = True
    assert st.reserve(None, T.cCCS2) == R.Occupied


class _RecordingLock:
    """An RLock that counts how often it was entered, to see who takes it."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.entered = 0

    def __enter__(self) -> bool:
        self.entered += 1
        return self._lock.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._lock.__exit__(*exc)


def test_expiry_callback_takes_the_lock_and_public_calls_do_not() -> None:
    """Public methods rely on the caller's lock; only the timer callback takes it."""
    st = Station()
    lock = _RecordingLock()
    st.book = ReservationBook(st.evses, st.clock, lock, None, st._record)  # type: ignore[arg-type]
    evses_ccs_and_type2(st, (1,))
    assert st.reserve(1, T.cCCS2) == R.Accepted
    st.book.check_global_reservations()
    assert lock.entered == 0
    st.clock.advance(3600)
    assert lock.entered == 1
    assert st.calls == [(1, 0, EXPIRED, True)]


def test_matching_agrees_with_enumerating_every_arrival_order() -> None:
    """The fast feasibility test gives the brute-force (EVerest) answer on random stations."""
    rng = random.Random(20260101)
    kinds = [T.cCCS2, T.cType2, T.cTesla, T.Unknown]
    events = [None, None, None, E.DISABLE, E.FAULTED, E.TRANSACTION_STARTED]
    disagreements = []
    infeasible = 0
    for case in range(1500):
        st = Station()
        for evse_id in range(1, rng.randint(1, 5) + 1):
            for connector_id in range(rng.randint(1, 2)):
                st.add_connector(evse_id, connector_id, rng.choice(kinds))
                event = rng.choice(events)
                if event is not None:
                    st.evses[evse_id].connectors[-1].submit(event)
            st.evses[evse_id].plugged_in = rng.random() < 0.1
        held = {e for e in st.evses if rng.random() < 0.2}
        cars = [rng.choice(kinds) for _ in range(rng.randint(0, 5))]
        fitting = {
            car: frozenset(e for e in st.evses if st.book._fits(e, car, held)) for car in set(cars)
        }
        expected = every_arrival_order_fits(cars, fitting)
        infeasible += not expected
        if no_car_can_be_shut_out(cars, fitting) != expected:
            disagreements.append((case, cars, fitting))
    assert disagreements == []
    assert 100 < infeasible < 1400  # both answers well represented


def test_matching_agrees_with_enumeration_on_random_fitting_sets() -> None:
    """Same property on arbitrary car/EVSE fit relations, where augmenting paths matter."""
    rng = random.Random(7)
    kinds = [T.cCCS2, T.cType2, T.cTesla, T.cCCS1, T.Pan]
    infeasible = 0
    for _ in range(3000):
        evse_ids = range(rng.randint(1, 6))
        cars = [rng.choice(kinds) for _ in range(rng.randint(1, 6))]
        fitting = {c: frozenset(e for e in evse_ids if rng.random() < 0.6) for c in set(cars)}
        expected = every_arrival_order_fits(cars, fitting)
        infeasible += not expected
        assert no_car_can_be_shut_out(cars, fitting) == expected, (cars, fitting)
    assert 300 < infeasible < 2700

def test_feasibility_stays_fast_for_a_large_station() -> None:
    """12 EVSEs, 12 station-wide reservations of 12 types: no exponential blow-up."""
    st = Station()
    kinds = [k for k in T if k is not T.Unknown][:12]
    for evse_id, kind in enumerate(kinds, start=1):
        st.add_connector(evse_id, 0, kind)
        st.add_connector(evse_id, 1, T.Unknown)
    started = time.perf_counter()
    assert [st.reserve(None, kind) for kind in kinds] == [R.Accepted] * 12
    assert st.reserve(None, T.cCCS2) == R.Occupied
    assert st.book.check_global_reservations() == (set(st.evses), set())
    assert time.perf_counter() - started < 2
