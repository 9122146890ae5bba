"""Issue 9: an EVSE that is disabled, or faulted (faults not ignored), is never given a token.

The connector state machine's table (``auth_module.core.evse.CONNECTOR_STATES``) is the one
source of "may this EVSE be given a token". These tests drive every combination of the
states a connector can be put in (available, occupied, disabled, faulted, and each pair)
through the real events, on a FakeClock, and check every path that can hand a parked token
an EVSE: the direct path, a plug-in, a fault cleared, an EVSE enabled, a reservation ended.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from auth_module.core.clock import FakeClock
from auth_module.core.evse import (
    CONNECTOR_STATES,
    Connector,
    ConnectorEvent,
    ConnectorState,
    EvseState,
)
from auth_module.core.handler import AuthHandler
from auth_module.types import (
    AuthorizationStatus,
    ConnectorTypeEnum,
    SelectionAlgorithm,
    SessionEventEnum,
    StartSessionReason,
    TokenValidationStatus,
)

from .conftest import (
    VALID_TOKEN_2,
    RecordingPorts,
    disabled,
    enabled,
    everest_settings,
    make_token,
    session_started,
    simple_event,
    transaction_started,
)

pytestmark = pytest.mark.timeout(10)

S, E = ConnectorState, ConnectorEvent
TIMEOUT = 3  # connection_timeout, as in the soak
EVSE = 3  # the EVSE the combination is applied to (of four)

# How each combination is reached, with the events the EVSE manager sends.
Setup = Callable[[AuthHandler], None]


def _occupy(auth: AuthHandler) -> None:
    auth.on_session_event(EVSE, transaction_started(make_token("SOMEONE_ELSE", [EVSE])))


def _disable(auth: AuthHandler) -> None:
    auth.on_session_event(EVSE, disabled())


def _fault(auth: AuthHandler) -> None:
    auth.on_fault_raised(EVSE)


COMBINATIONS: dict[str, list[Setup]] = {
    "available": [],
    "occupied": [_occupy],
    "disabled": [_disable],
    "faulted": [_fault],
    "occupied+disabled": [_occupy, _disable],
    "disabled+occupied": [_disable, _occupy],
    "occupied+faulted": [_occupy, _fault],
    "faulted+occupied": [_fault, _occupy],
    "disabled+faulted": [_disable, _fault],
    "faulted+disabled": [_fault, _disable],
}

# The state a single connector is left in: written out here, not computed from the table.
EXPECTED_STATE = {
    "available": S.AVAILABLE,
    "occupied": S.OCCUPIED,
    "disabled": S.UNAVAILABLE,
    "faulted": S.FAULTED,
    "occupied+disabled": S.OCCUPIED,  # EVerest's machine ignores a disable in a session
    "disabled+occupied": S.UNAVAILABLE,  # ... and a transaction on a disabled connector
    "occupied+faulted": S.FAULTED_OCCUPIED,
    "faulted+occupied": S.FAULTED,
    "disabled+faulted": S.UNAVAILABLE_FAULTED,
    "faulted+disabled": S.UNAVAILABLE_FAULTED,
}


def station(clock: FakeClock, ports: RecordingPorts, *, ignore_faults: bool = False
            ) -> AuthHandler:
    auth = AuthHandler(everest_settings(selection_algorithm=SelectionAlgorithm.PlugEvents,
                                        connection_timeout=TIMEOUT,
                                        plug_in_timeout_enabled=False,
                                        ignore_connector_faults=ignore_faults),
                       clock, ports)
    for evse_id in (1, 2, 3, 4):
        auth.add_evse(evse_id, evse_id - 1, [(1, ConnectorTypeEnum.cCCS2)])
        ports.add_evse_index(evse_id - 1)
    return auth


def plug_in(auth: AuthHandler, evse_id: int) -> None:
    auth.on_session_event(evse_id, session_started(StartSessionReason.EVConnected))


def outcome(ports: RecordingPorts) -> TokenValidationStatus | None:
    """How the token ended: UsedToStart if it was ever used to start, else its final status.
    (A granted authorization that sees no transaction later times out too.)"""
    statuses = ports.statuses_of(VALID_TOKEN_2)
    if TokenValidationStatus.UsedToStart in statuses:
        return TokenValidationStatus.UsedToStart
    return ports.final_status(VALID_TOKEN_2)


def given(ports: RecordingPorts, evse_id: int) -> bool:
    """Whether the token was granted EVSE ``evse_id`` (an Accepted authorize_response)."""
    return any(index == evse_id - 1 and token.id_token.value == VALID_TOKEN_2
               and result.authorization_status == AuthorizationStatus.Accepted
               for index, token, result in ports.authorize_responses)


# --- the table itself --------------------------------------------------------------------------


def test_the_table_covers_every_state_and_only_available_takes_a_token() -> None:
    assert set(CONNECTOR_STATES) == set(ConnectorState)
    assert [s for s, use in CONNECTOR_STATES.items() if use.may_take_token] == [S.AVAILABLE]
    assert {s for s, use in CONNECTOR_STATES.items() if use.in_use} == {
        S.OCCUPIED, S.FAULTED_OCCUPIED}
    assert {s for s, use in CONNECTOR_STATES.items() if use.disabled} == {
        S.UNAVAILABLE, S.UNAVAILABLE_FAULTED}


def _evse(*states: ConnectorState) -> EvseState:
    connectors = []
    for n, state in enumerate(states, start=1):
        c = Connector(n)
        c.connector_state = state
        connectors.append(c)
    return EvseState(evse_id=1, index=0, connectors=connectors)


@pytest.mark.parametrize("first", list(ConnectorState))
@pytest.mark.parametrize("second", [None, *ConnectorState])
def test_an_evse_is_available_only_with_a_free_connector_and_none_in_use(
        first: ConnectorState, second: ConnectorState | None) -> None:
    """Every state, and every pair of states on a two-connector EVSE."""
    states = [first] if second is None else [first, second]
    evse = _evse(*states)
    in_use = {S.OCCUPIED, S.FAULTED_OCCUPIED}
    expected = S.AVAILABLE in states and not in_use & set(states)
    assert evse.is_available() is expected
    assert evse.is_unavailable() is all(s in (S.UNAVAILABLE, S.UNAVAILABLE_FAULTED)
                                        for s in states)


@pytest.mark.parametrize("name", list(COMBINATIONS))
def test_the_events_leave_the_connector_in_the_expected_state(name: str) -> None:
    clock, ports = FakeClock(), RecordingPorts()
    auth = station(clock, ports)
    for step in COMBINATIONS[name]:
        step(auth)
    assert auth.evses[EVSE].connectors[0].connector_state == EXPECTED_STATE[name]


# --- every path that hands out an EVSE ----------------------------------------------------------


@pytest.mark.parametrize("name", list(COMBINATIONS))
def test_direct_path(name: str) -> None:
    """The car is already plugged in when the token comes: only an available EVSE is given."""
    clock, ports = FakeClock(), RecordingPorts()
    auth = station(clock, ports)
    for step in COMBINATIONS[name]:
        step(auth)
    plug_in(auth, EVSE)
    auth.on_token(make_token(VALID_TOKEN_2))
    clock.advance(TIMEOUT + 1)
    assert given(ports, EVSE) is (name == "available")
    assert outcome(ports) == (TokenValidationStatus.UsedToStart if name == "available"
                              else TokenValidationStatus.TimedOut)


@pytest.mark.parametrize("name", list(COMBINATIONS))
def test_parked_token_on_plug_in(name: str) -> None:
    """The issue's sequence: parked first, then the EVSE changes, then a car plugs in."""
    clock, ports = FakeClock(), RecordingPorts()
    auth = station(clock, ports)
    auth.on_token(make_token(VALID_TOKEN_2))  # no car anywhere: parked
    assert ports.final_status(VALID_TOKEN_2) is None
    for step in COMBINATIONS[name]:
        step(auth)
    plug_in(auth, EVSE)
    assert given(ports, EVSE) is (name == "available")
    clock.advance(TIMEOUT)
    assert outcome(ports) == (
        TokenValidationStatus.UsedToStart if name == "available" else TokenValidationStatus.TimedOut)


def _clear_fault(auth: AuthHandler) -> None:
    auth.on_fault_cleared(EVSE)


def _enable(auth: AuthHandler) -> None:
    auth.on_session_event(EVSE, enabled())


def _reservation_end(auth: AuthHandler) -> None:
    auth.on_session_event(EVSE, simple_event(SessionEventEnum.ReservationEnd))


RECHECKS: dict[str, Setup] = {
    "fault cleared": _clear_fault,
    "enabled": _enable,
    "reservation ended": _reservation_end,
}

# After the re-check event, may the parked token have the plugged-in EVSE? Written out:
# only a connector that ends up AVAILABLE, with no session of someone else on it.
MAY_TAKE_AFTER = {
    ("disabled", "enabled"), ("faulted", "fault cleared"),
}


@pytest.mark.parametrize("recheck", list(RECHECKS))
@pytest.mark.parametrize("name", [n for n in COMBINATIONS if n != "available"])
def test_parked_token_on_a_recheck(name: str, recheck: str) -> None:
    """A car waits at an EVSE that could not be given; then something changes there."""
    clock, ports = FakeClock(), RecordingPorts()
    auth = station(clock, ports)
    auth.on_token(make_token(VALID_TOKEN_2))
    for step in COMBINATIONS[name]:
        step(auth)
    plug_in(auth, EVSE)
    assert not given(ports, EVSE)
    RECHECKS[recheck](auth)
    expected = (name, recheck) in MAY_TAKE_AFTER
    assert given(ports, EVSE) is expected
    clock.advance(TIMEOUT)
    assert outcome(ports) == (
        TokenValidationStatus.UsedToStart if expected else TokenValidationStatus.TimedOut)


def test_disabled_and_faulted_needs_both_cleared() -> None:
    """UNAVAILABLE_FAULTED: enabling leaves it faulted, clearing leaves it disabled; only
    both free it, and then the waiting car gets the token."""
    clock, ports = FakeClock(), RecordingPorts()
    auth = station(clock, ports)
    auth.on_token(make_token(VALID_TOKEN_2))
    _disable(auth)
    _fault(auth)
    plug_in(auth, EVSE)
    _enable(auth)
    assert not given(ports, EVSE)
    _clear_fault(auth)
    assert given(ports, EVSE)
    assert outcome(ports) == TokenValidationStatus.UsedToStart


def test_ignored_faults_do_not_block() -> None:
    """With ignore_connector_faults: true a fault changes nothing: the EVSE is given."""
    clock, ports = FakeClock(), RecordingPorts()
    auth = station(clock, ports, ignore_faults=True)
    auth.on_token(make_token(VALID_TOKEN_2))
    _fault(auth)
    plug_in(auth, EVSE)
    assert given(ports, EVSE)


def test_another_evse_is_still_given_after_a_refused_one() -> None:
    """The parked token keeps waiting: a car at a usable EVSE later gets it."""
    clock, ports = FakeClock(), RecordingPorts()
    auth = station(clock, ports)
    auth.on_token(make_token(VALID_TOKEN_2))
    _disable(auth)
    _fault(auth)
    plug_in(auth, EVSE)
    assert not given(ports, EVSE)
    clock.advance(TIMEOUT - 1)
    plug_in(auth, 1)
    assert given(ports, 1) and not given(ports, EVSE)
    assert outcome(ports) == TokenValidationStatus.UsedToStart
