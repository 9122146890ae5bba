"""The scenarios of EVerest's ``modules/EVSE/Auth/tests/auth_tests.cpp``, one test each.

The 47 of the first port, and at the end those EVerest added since (see
``docs/everest-parity.md``): PlugEventsLIFO (#2344), Withdrawn for a granted authorization
(#2499, changed expectations of two withdraw tests), stop_transaction_on_reswipe (#2530).

Translation rules (our core never blocks waiting for a car):

* where EVerest starts ``on_token`` in a thread that blocks in ``select_evse`` and joins it
  after a plug-in, we call ``on_token`` (it answers ``PENDING``), send the plug-in event, and
  read the final status from what was published;
* where EVerest sleeps for the connection timeout, we ``clock.advance(...)``;
* where EVerest runs events and tokens in concurrent threads whose order does not matter to
  the outcome, we run them sequentially in one order the original allows.

EVerest's publish mock is a StrictMock, so the published statuses are asserted exactly: the
full ordered list per token value, and no status for any other token.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from auth_module.core.clock import FakeClock
from auth_module.core.handler import AuthHandler
from auth_module.core.tokens import TokenOutcome
from auth_module.types import (
    AuthorizationStatus,
    SelectionAlgorithm,
    ConnectorTypeEnum,
    ReservationResult,
    ReservationUpdate,
    SessionEventEnum,
    StartSessionReason,
    StopTransactionReason,
    TokenValidationStatus,
    ValidationResult,
    WithdrawAuthorizationRequest,
    WithdrawAuthorizationResult,
    to_wire,
)

from .conftest import (
    CONNECTION_TIMEOUT,
    MakeAuth,
    INVALID_TOKEN,
    PARENT_ID_TOKEN,
    VALID_TOKEN_1,
    VALID_TOKEN_2,
    VALID_TOKEN_3,
    RecordingPorts,
    accepted,
    deauthorized,
    everest_settings,
    id_token,
    make_token,
    pnc_token,
    reservation,
    session_finished,
    session_started,
    simple_event,
    transaction_finished,
    transaction_started,
)

pytestmark = pytest.mark.timeout(10)

S = TokenValidationStatus
O = TokenOutcome
PROCESSING, ACCEPTED, REJECTED = S.Processing, S.Accepted, S.Rejected
TIMED_OUT, USED_TO_START, USED_TO_STOP, WITHDRAWN = S.TimedOut, S.UsedToStart, S.UsedToStop, S.Withdrawn
USED_TO_REAUTHORIZE = S.UsedToReauthorize


def expect_statuses(ports: RecordingPorts, expected: dict[str, list[TokenValidationStatus]]) -> None:
    """Exactly these statuses, in this order, per token value; nothing for any other token."""
    for value, statuses in expected.items():
        assert ports.statuses_of(value) == statuses, value
    published = {value for value, _, _ in ports.statuses}
    assert published <= set(expected), published - set(expected)


def plug_in(auth: AuthHandler, evse_id: int) -> None:
    auth.on_session_event(evse_id, session_started(StartSessionReason.EVConnected))


def authorized(ports: RecordingPorts) -> list[bool]:
    """The FakeAuthReceiver flags of indices 0 .. n-1."""
    return [ports.is_authorized(i) for i in range(len(ports.authorized))]


def add_single_connector_evses(auth: AuthHandler, ports: RecordingPorts, *ids: int) -> None:
    """``init_evse(id, id - 1, {Connector(1, sType2)})`` for each id."""
    for evse_id in ids:
        auth.add_evse(evse_id, evse_id - 1, [(1, ConnectorTypeEnum.sType2)])
        ports.add_evse_index(evse_id - 1)


# --- authorization and plug-in order -------------------------------------------------------


def test_simple_authorization(auth: AuthHandler, ports: RecordingPorts) -> None:
    """A plugged-in EVSE named by the token is authorized; the token gains its parent id."""
    plug_in(auth, 1)
    token = make_token(VALID_TOKEN_1, [1])
    expected = token.model_copy(deep=True)
    expected.parent_id_token = id_token(PARENT_ID_TOKEN)

    assert auth.on_token(token) == O.USED_TO_START_TRANSACTION

    expect_statuses(ports, {VALID_TOKEN_1: [PROCESSING, ACCEPTED, USED_TO_START]})
    assert ports.tokens_of(VALID_TOKEN_1, ACCEPTED) == [to_wire(expected)]
    assert ports.tokens_of(VALID_TOKEN_1, USED_TO_START) == [to_wire(expected)]
    assert ports.is_authorized(0) and not ports.is_authorized(1)


def test_two_referenced_connectors(auth: AuthHandler, ports: RecordingPorts) -> None:
    """With two referenced EVSEs, the one where the car was plugged in is authorized."""
    plug_in(auth, 2)

    assert auth.on_token(make_token(VALID_TOKEN_1, [1, 2])) == O.USED_TO_START_TRANSACTION

    expect_statuses(ports, {VALID_TOKEN_1: [PROCESSING, ACCEPTED, USED_TO_START]})
    assert ports.is_authorized(1) and not ports.is_authorized(0)


def test_multiple_referenced_connectors(
    auth: AuthHandler, ports: RecordingPorts, clock: FakeClock
) -> None:
    """A token waiting for EVSE 1/2 does not take EVSE 3's plug-in and times out (PENDING, then advance)."""
    auth.add_evse(3, 2, [(1, ConnectorTypeEnum.sType2)])
    ports.add_evse_index(2)
    token1 = make_token(VALID_TOKEN_1, [1, 2])
    token2 = make_token(VALID_TOKEN_2, [3])

    assert auth.on_token(token1) == O.PENDING  # EVerest: t1 blocks in select_evse
    assert auth.on_token(token2) == O.USED_TO_START_TRANSACTION  # single candidate: no wait
    plug_in(auth, 3)

    assert ports.final_status(VALID_TOKEN_2) == USED_TO_START
    assert authorized(ports) == [False, False, True]

    auth.on_session_event(3, transaction_started(token2))
    assert ports.final_status(VALID_TOKEN_1) is None  # still waiting
    clock.advance(CONNECTION_TIMEOUT)  # EVerest: t1.join() returns TIMEOUT

    expect_statuses(ports, {
        VALID_TOKEN_1: [PROCESSING, ACCEPTED, TIMED_OUT],
        VALID_TOKEN_2: [PROCESSING, ACCEPTED, USED_TO_START],
    })
    assert authorized(ports) == [False, False, True]


def test_multiple_authorization_requests(
    auth: AuthHandler, ports: RecordingPorts, clock: FakeClock
) -> None:
    """Three waiting tokens, one plug-in: the matching one starts, the other two time out."""
    add_single_connector_evses(auth, ports, 3, 4, 5, 6)

    assert auth.on_token(make_token(VALID_TOKEN_1, [1, 2])) == O.PENDING
    assert auth.on_token(make_token(VALID_TOKEN_2, [3, 4])) == O.PENDING
    assert auth.on_token(make_token(VALID_TOKEN_3, [5, 6])) == O.PENDING

    plug_in(auth, 6)
    assert ports.final_status(VALID_TOKEN_3) == USED_TO_START
    auth.on_session_event(6, transaction_started(make_token(VALID_TOKEN_3, [5, 6])))
    assert ports.is_authorized(5)

    clock.advance(CONNECTION_TIMEOUT)

    expect_statuses(ports, {
        VALID_TOKEN_1: [PROCESSING, ACCEPTED, TIMED_OUT],
        VALID_TOKEN_2: [PROCESSING, ACCEPTED, TIMED_OUT],
        VALID_TOKEN_3: [PROCESSING, ACCEPTED, USED_TO_START],  # and never TimedOut
    })
    assert authorized(ports) == [False, False, False, False, False, True]


def test_stop_transaction(auth: AuthHandler, ports: RecordingPorts) -> None:
    """The same card swiped again during its transaction stops it."""
    token = make_token(VALID_TOKEN_1, [1])
    plug_in(auth, 1)

    assert auth.on_token(token) == O.USED_TO_START_TRANSACTION
    assert authorized(ports) == [True, False]

    auth.on_session_event(1, transaction_started(token))
    assert auth.on_token(token) == O.USED_TO_STOP_TRANSACTION

    expect_statuses(ports, {
        VALID_TOKEN_1: [PROCESSING, ACCEPTED, USED_TO_START, PROCESSING, USED_TO_STOP]})
    assert authorized(ports) == [False, False]
    [(index, request)] = ports.stops
    assert index == 0 and request.reason == StopTransactionReason.Local


def test_authorize_first(auth: AuthHandler, ports: RecordingPorts) -> None:
    """Swipe first (PENDING), then the plug-in picks the EVSE."""
    assert auth.on_token(make_token(VALID_TOKEN_1, [1, 2])) == O.PENDING
    plug_in(auth, 1)

    expect_statuses(ports, {VALID_TOKEN_1: [PROCESSING, ACCEPTED, USED_TO_START]})
    assert authorized(ports) == [True, False]


def test_swipe_multiple_times_with_timeout(
    auth: AuthHandler, ports: RecordingPorts, clock: FakeClock
) -> None:
    """Four swipes of one card: one is processed (times out), three are ALREADY_IN_PROCESS; a re-swipe then starts."""
    token = make_token(VALID_TOKEN_1, [1, 2])

    results = [auth.on_token(token) for _ in range(4)]  # EVerest: 4 concurrent threads
    assert results == [O.PENDING] + [O.ALREADY_IN_PROCESS] * 3
    clock.advance(CONNECTION_TIMEOUT + 1)

    assert ports.final_status(VALID_TOKEN_1) == TIMED_OUT
    assert authorized(ports) == [False, False]

    assert auth.on_token(token) == O.PENDING
    plug_in(auth, 2)

    expect_statuses(ports, {VALID_TOKEN_1: [
        PROCESSING, ACCEPTED, TIMED_OUT, PROCESSING, ACCEPTED, USED_TO_START]})
    assert authorized(ports) == [False, True]


def test_swipe_multiple_times_with_timeout_concurrent(
    auth: AuthHandler, ports: RecordingPorts, clock: FakeClock
) -> None:
    """Concurrent variant with real threads: while one swipe is being validated, the three others are ALREADY_IN_PROCESS."""
    entered, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def blocking_validator(token):  # type: ignore[no-untyped-def]
        calls.append(token.id_token.value)
        entered.set()
        assert release.wait(5), "validator never released"
        return [accepted(PARENT_ID_TOKEN)]

    ports.validate_fn = blocking_validator
    token = make_token(VALID_TOKEN_1, [1, 2])
    results: list[TokenOutcome] = []
    done = threading.Condition()
    barrier = threading.Barrier(4)

    def swipe() -> None:
        barrier.wait(5)
        outcome = auth.on_token(token)
        with done:
            results.append(outcome)
            done.notify_all()

    threads = [threading.Thread(target=swipe) for _ in range(4)]
    for thread in threads:
        thread.start()
    assert entered.wait(5)
    with done:  # the three others return while the first is still inside the validator
        assert done.wait_for(lambda: len(results) == 3, timeout=5)
    assert results == [O.ALREADY_IN_PROCESS] * 3
    release.set()
    for thread in threads:
        thread.join(5)
    assert not any(thread.is_alive() for thread in threads)

    assert sorted(results) == sorted([O.PENDING] + [O.ALREADY_IN_PROCESS] * 3)
    assert calls == [VALID_TOKEN_1]
    clock.advance(CONNECTION_TIMEOUT)
    expect_statuses(ports, {VALID_TOKEN_1: [PROCESSING, ACCEPTED, TIMED_OUT]})
    assert authorized(ports) == [False, False]


def test_two_id_tokens(auth: AuthHandler, ports: RecordingPorts) -> None:
    """Two different waiting cards are used for two separate plug-ins."""
    assert auth.on_token(make_token(VALID_TOKEN_1, [1, 2])) == O.PENDING
    assert auth.on_token(make_token(VALID_TOKEN_2, [1, 2])) == O.PENDING
    plug_in(auth, 1)
    plug_in(auth, 2)

    expect_statuses(ports, {
        VALID_TOKEN_1: [PROCESSING, ACCEPTED, USED_TO_START],
        VALID_TOKEN_2: [PROCESSING, ACCEPTED, USED_TO_START],
    })
    assert authorized(ports) == [True, True]


def test_two_plugins(auth: AuthHandler, ports: RecordingPorts) -> None:
    """Two plug-ins before two swipes give two authorizations."""
    plug_in(auth, 1)
    plug_in(auth, 2)

    assert auth.on_token(make_token(VALID_TOKEN_1, [1, 2])) == O.USED_TO_START_TRANSACTION
    assert auth.on_token(make_token(VALID_TOKEN_2, [1, 2])) == O.USED_TO_START_TRANSACTION

    expect_statuses(ports, {
        VALID_TOKEN_1: [PROCESSING, ACCEPTED, USED_TO_START],
        VALID_TOKEN_2: [PROCESSING, ACCEPTED, USED_TO_START],
    })
    assert authorized(ports) == [True, True]


def test_authorization_after_plug_in_and_plug_out(auth: AuthHandler, ports: RecordingPorts) -> None:
    """A plug-in followed by a plug-out on EVSE 1 does not count; the next plug-in on EVSE 2 does."""
    plug_in(auth, 1)
    auth.on_session_event(1, session_finished())

    assert auth.on_token(make_token(VALID_TOKEN_1, [1, 2])) == O.PENDING
    plug_in(auth, 2)

    expect_statuses(ports, {VALID_TOKEN_1: [PROCESSING, ACCEPTED, USED_TO_START]})
    assert authorized(ports) == [False, True]


def test_two_plugins_with_invalid_rfid(auth: AuthHandler, ports: RecordingPorts) -> None:
    """Two plug-ins, a valid and an invalid card: the valid one starts, the invalid one is rejected."""
    plug_in(auth, 1)
    plug_in(auth, 2)

    assert auth.on_token(make_token(VALID_TOKEN_1, [1, 2])) == O.USED_TO_START_TRANSACTION
    assert ports.is_authorized(0)

    assert auth.on_token(make_token(INVALID_TOKEN, [1, 2])) == O.REJECTED

    expect_statuses(ports, {
        VALID_TOKEN_1: [PROCESSING, ACCEPTED, USED_TO_START],
        INVALID_TOKEN: [PROCESSING, REJECTED],
    })
    assert not ports.is_authorized(1)


def test_faulted_state(auth: AuthHandler, ports: RecordingPorts) -> None:
    """Faulted EVSEs are not authorized (intended difference: one Inoperative fault faults every connector of the EVSE; EVerest faults per connector)."""
    auth.on_fault_raised(1)  # EVerest: (1, 1)
    auth.on_fault_raised(2)  # EVerest: (2, 1) and (2, 2)

    assert auth.on_token(make_token(VALID_TOKEN_1, [1, 2])) == O.NO_CONNECTOR_AVAILABLE
    assert auth.on_token(make_token(VALID_TOKEN_2, [1, 2])) == O.NO_CONNECTOR_AVAILABLE

    expect_statuses(ports, {
        VALID_TOKEN_1: [PROCESSING, REJECTED],
        VALID_TOKEN_2: [PROCESSING, REJECTED],
    })
    assert authorized(ports) == [False, False]


def test_transaction_finish(auth: AuthHandler, ports: RecordingPorts) -> None:
    """Two transactions started by two cards are each stopped by a second swipe of the same card."""
    token1 = make_token(VALID_TOKEN_1, [1, 2])
    token2 = make_token(VALID_TOKEN_2, [1, 2])
    plug_in(auth, 1)
    plug_in(auth, 2)

    assert auth.on_token(token1) == O.USED_TO_START_TRANSACTION
    assert auth.on_token(token2) == O.USED_TO_START_TRANSACTION
    auth.on_session_event(1, transaction_started(token1))
    auth.on_session_event(2, transaction_started(token2))
    assert authorized(ports) == [True, True]

    assert auth.on_token(token1) == O.USED_TO_STOP_TRANSACTION
    assert auth.on_token(token2) == O.USED_TO_STOP_TRANSACTION

    expect_statuses(ports, {
        VALID_TOKEN_1: [PROCESSING, ACCEPTED, USED_TO_START, PROCESSING, USED_TO_STOP],
        VALID_TOKEN_2: [PROCESSING, ACCEPTED, USED_TO_START, PROCESSING, USED_TO_STOP],
    })
    assert authorized(ports) == [False, False]


# --- parent id tokens ---------------------------------------------------------------------


def test_parent_id_finish(auth: AuthHandler, ports: RecordingPorts) -> None:
    """With prioritize=false, a card of the same group (parent id) stops the transaction."""
    token1 = make_token(VALID_TOKEN_1, [1, 2])
    token3 = make_token(VALID_TOKEN_3, [1, 2])
    plug_in(auth, 1)

    assert auth.on_token(token1) == O.USED_TO_START_TRANSACTION
    auth.on_session_event(1, transaction_started(token1))
    assert authorized(ports) == [True, False]

    assert auth.on_token(token3) == O.USED_TO_STOP_TRANSACTION

    expect_statuses(ports, {
        VALID_TOKEN_1: [PROCESSING, ACCEPTED, USED_TO_START],
        VALID_TOKEN_3: [PROCESSING, USED_TO_STOP],
    })
    assert authorized(ports) == [False, False]
    [(index, request)] = ports.stops
    assert index == 0 and request.reason == StopTransactionReason.Local
    [stop_token] = ports.tokens_of(VALID_TOKEN_3, USED_TO_STOP)
    assert stop_token["parent_id_token"]["value"] == PARENT_ID_TOKEN
    assert stop_token["connectors"] == [1]


def test_parent_id_no_finish(auth: AuthHandler, ports: RecordingPorts) -> None:
    """With prioritize=true and a free EVSE, a card of the same group starts there instead of stopping."""
    auth.set_prioritize_authorization_over_stopping_transaction(True)
    plug_in(auth, 1)

    assert auth.on_token(make_token(VALID_TOKEN_1, [1, 2])) == O.USED_TO_START_TRANSACTION
    assert authorized(ports) == [True, False]

    # EVSE 1 already holds an authorization, so EVSE 2 is the only candidate: no wait.
    assert auth.on_token(make_token(VALID_TOKEN_3, [1, 2])) == O.USED_TO_START_TRANSACTION
    plug_in(auth, 2)

    expect_statuses(ports, {
        VALID_TOKEN_1: [PROCESSING, ACCEPTED, USED_TO_START],
        VALID_TOKEN_3: [PROCESSING, ACCEPTED, USED_TO_START],
    })
    assert authorized(ports) == [True, True]
    assert ports.stops == []


def test_parent_id_finish_because_no_available_connector(
    auth: AuthHandler, ports: RecordingPorts
) -> None:
    """With prioritize=true but no free EVSE (EVSE 2 faulted), a card of the same group stops the transaction."""
    auth.set_prioritize_authorization_over_stopping_transaction(True)
    token1 = make_token(VALID_TOKEN_1, [1, 2])
    plug_in(auth, 1)
    auth.on_fault_raised(2)  # EVerest: (2, 1) and (2, 2)

    assert auth.on_token(token1) == O.USED_TO_START_TRANSACTION
    auth.on_session_event(1, transaction_started(token1))
    assert authorized(ports) == [True, False]

    assert auth.on_token(make_token(VALID_TOKEN_3, [1, 2])) == O.USED_TO_STOP_TRANSACTION

    expect_statuses(ports, {
        VALID_TOKEN_1: [PROCESSING, ACCEPTED, USED_TO_START],
        VALID_TOKEN_3: [PROCESSING, USED_TO_STOP],
    })
    assert authorized(ports) == [False, False]


def test_parent_id_finish_because_no_available_connector_2(
    auth: AuthHandler, ports: RecordingPorts
) -> None:
    """As above with the roles swapped: EVSE 1 faulted, the transaction runs on EVSE 2."""
    auth.set_prioritize_authorization_over_stopping_transaction(True)
    token1 = make_token(VALID_TOKEN_1, [1, 2])
    plug_in(auth, 2)
    auth.on_fault_raised(1)

    assert auth.on_token(token1) == O.USED_TO_START_TRANSACTION
    auth.on_session_event(2, transaction_started(token1))
    assert authorized(ports) == [False, True]

    assert auth.on_token(make_token(VALID_TOKEN_3, [1, 2])) == O.USED_TO_STOP_TRANSACTION

    expect_statuses(ports, {
        VALID_TOKEN_1: [PROCESSING, ACCEPTED, USED_TO_START],
        VALID_TOKEN_3: [PROCESSING, USED_TO_STOP],
    })
    assert authorized(ports) == [False, False]
    assert [index for index, _ in ports.stops] == [1]


# --- reservations ---------------------------------------------------------------------------


def test_reservation(auth: AuthHandler, ports: RecordingPorts, clock: FakeClock) -> None:
    """A reservation for EVSE 1 expiring in an hour is accepted."""
    result = auth.reserve_now(reservation(clock, 1, VALID_TOKEN_1, evse_id=1,
                                          connector_type=ConnectorTypeEnum.cCCS2))

    assert result == ReservationResult.Accepted
    assert ports.calls_named("reserve") == [("reserve", 0, 1)]
    assert ports.calls_named("reservation_update") == [
        ("reservation_update", 1, ReservationUpdate.Placed)]


def test_reservation_in_past(auth: AuthHandler, ports: RecordingPorts, clock: FakeClock) -> None:
    """A reservation whose expiry time has passed is rejected."""
    result = auth.reserve_now(reservation(clock, 1, VALID_TOKEN_1, evse_id=1,
                                          connector_type=ConnectorTypeEnum.cCCS2,
                                          expires_in=-timedelta(hours=1)))

    assert result == ReservationResult.Rejected
    assert ports.calls_named("reserve") == []
    assert ports.calls_named("reservation_update") == []


def test_reservation_with_authorization(
    auth: AuthHandler, ports: RecordingPorts, clock: FakeClock
) -> None:
    """On a reserved EVSE, another card is accepted but then rejected; the reserving card starts."""
    assert auth.reserve_now(reservation(
        clock, 1, VALID_TOKEN_2, evse_id=1, connector_type=ConnectorTypeEnum.cCCS2,
    )) == ReservationResult.Accepted
    auth.on_session_event(1, simple_event(SessionEventEnum.ReservationStart))
    plug_in(auth, 1)

    assert auth.on_token(make_token(VALID_TOKEN_1, [1, 2])) == O.REJECTED
    assert authorized(ports) == [False, False]
    statuses = [r.authorization_status for i, _, r in ports.authorize_responses if i == 0]
    assert AuthorizationStatus.NotAtThisTime in statuses

    assert auth.on_token(make_token(VALID_TOKEN_2, [1, 2])) == O.USED_TO_START_TRANSACTION

    expect_statuses(ports, {
        VALID_TOKEN_1: [PROCESSING, ACCEPTED, REJECTED],
        VALID_TOKEN_2: [PROCESSING, ACCEPTED, USED_TO_START],
    })
    assert authorized(ports) == [True, False]
    _, _, last = ports.authorize_responses[-1]
    assert last.reservation_id == 1


def test_reservation_with_authorization_global_reservations(
    auth: AuthHandler, ports: RecordingPorts, clock: FakeClock
) -> None:
    """A station-wide sType2 reservation keeps the only sType2 EVSE from another card (token first, then plug-in)."""
    assert auth.reserve_now(reservation(
        clock, 1, VALID_TOKEN_2, connector_type=ConnectorTypeEnum.sType2,
    )) == ReservationResult.Accepted
    auth.on_session_event(2, simple_event(SessionEventEnum.ReservationStart))

    # EVerest runs on_token and the plug-in concurrently; the token waits for the plug-in.
    assert auth.on_token(make_token(VALID_TOKEN_1, [1, 2])) == O.PENDING
    plug_in(auth, 2)

    expect_statuses(ports, {VALID_TOKEN_1: [PROCESSING, ACCEPTED, REJECTED]})
    assert authorized(ports) == [False, False]


def test_reservation_with_authorization_global_reservations_2(
    auth: AuthHandler, ports: RecordingPorts, clock: FakeClock
) -> None:
    """Two station-wide reservations on two EVSEs leave nothing for a third card: rejected before validation."""
    first = reservation(clock, 1, VALID_TOKEN_2, connector_type=ConnectorTypeEnum.cCCS2)
    assert auth.reserve_now(first) == ReservationResult.Accepted
    second = first.model_copy(update={"reservation_id": 2, "id_token": VALID_TOKEN_1})
    assert auth.reserve_now(second) == ReservationResult.Accepted
    auth.on_session_event(2, simple_event(SessionEventEnum.ReservationStart))

    assert auth.on_token(make_token(VALID_TOKEN_3, [1, 2])) == O.NO_CONNECTOR_AVAILABLE
    auth.on_session_event(2, session_started(StartSessionReason.Authorized))

    expect_statuses(ports, {VALID_TOKEN_3: [PROCESSING, REJECTED]})
    assert authorized(ports) == [False, False]
    assert ports.calls_named("validate") == []


def test_complete_event_flow(auth: AuthHandler, ports: RecordingPorts) -> None:
    """A whole session (plug, start, pause, charge, finish, unplug) and then a second one."""
    token = make_token(VALID_TOKEN_1, [1])
    plug_in(auth, 1)

    assert auth.on_token(token) == O.USED_TO_START_TRANSACTION
    assert authorized(ports) == [True, False]

    auth.on_session_event(1, transaction_started(token))
    auth.on_session_event(1, simple_event(SessionEventEnum.ChargingPausedEV))
    auth.on_session_event(1, simple_event(SessionEventEnum.ChargingStarted))
    auth.on_session_event(1, transaction_finished(token))
    auth.on_session_event(1, session_finished())
    ports.reset()

    plug_in(auth, 1)
    assert auth.on_token(token) == O.USED_TO_START_TRANSACTION

    expect_statuses(ports, {VALID_TOKEN_1: [
        PROCESSING, ACCEPTED, USED_TO_START, PROCESSING, ACCEPTED, USED_TO_START]})
    assert authorized(ports) == [True, False]


def test_reservation_with_parent_id_tag(
    auth: AuthHandler, ports: RecordingPorts, clock: FakeClock
) -> None:
    """A reservation with a parent id rejects a foreign card and accepts a card of the same group."""
    assert auth.reserve_now(reservation(
        clock, 1, VALID_TOKEN_1, evse_id=1, parent=PARENT_ID_TOKEN,
    )) == ReservationResult.Accepted
    auth.on_session_event(1, simple_event(SessionEventEnum.ReservationStart))
    plug_in(auth, 1)

    assert auth.on_token(make_token(VALID_TOKEN_2, [1, 2])) == O.REJECTED
    assert authorized(ports) == [False, False]

    assert auth.on_token(make_token(VALID_TOKEN_3, [1, 2])) == O.USED_TO_START_TRANSACTION

    expect_statuses(ports, {
        VALID_TOKEN_2: [PROCESSING, ACCEPTED, REJECTED],
        VALID_TOKEN_3: [PROCESSING, ACCEPTED, USED_TO_START],
    })
    assert authorized(ports) == [True, False]


# --- timeouts -------------------------------------------------------------------------------


def test_authorization_timeout_and_reswipe(
    auth: AuthHandler, ports: RecordingPorts, clock: FakeClock
) -> None:
    """A swipe without plug-in times out; the next swipe with a plug-in starts."""
    token = make_token(VALID_TOKEN_1, [1, 2])

    assert auth.on_token(token) == O.PENDING
    clock.advance(CONNECTION_TIMEOUT)
    assert ports.final_status(VALID_TOKEN_1) == TIMED_OUT
    assert not ports.is_authorized(0)

    assert auth.on_token(token) == O.PENDING
    plug_in(auth, 1)

    expect_statuses(ports, {VALID_TOKEN_1: [
        PROCESSING, ACCEPTED, TIMED_OUT, PROCESSING, ACCEPTED, USED_TO_START]})
    assert ports.is_authorized(0)


def test_authorization_without_transaction(
    auth: AuthHandler, ports: RecordingPorts, clock: FakeClock
) -> None:
    """A re-swipe while authorized without transaction is ALREADY_IN_PROCESS; after the authorization times out it starts again."""
    token = make_token(VALID_TOKEN_1, [1])

    assert auth.on_token(token) == O.USED_TO_START_TRANSACTION
    assert ports.is_authorized(0)

    assert auth.on_token(token) == O.ALREADY_IN_PROCESS
    assert ports.is_authorized(0)

    clock.advance(CONNECTION_TIMEOUT + 1)
    assert ports.final_status(VALID_TOKEN_1) == TIMED_OUT
    assert ports.withdrawn == [0]

    assert auth.on_token(token) == O.USED_TO_START_TRANSACTION

    expect_statuses(ports, {VALID_TOKEN_1: [
        PROCESSING, ACCEPTED, USED_TO_START, TIMED_OUT, PROCESSING, ACCEPTED, USED_TO_START]})
    assert ports.is_authorized(0)


def test_two_transactions_start_stop(auth: AuthHandler, ports: RecordingPorts) -> None:
    """Two plug-ins, two starts, two transactions, then both cards stop their own transaction."""
    token1 = make_token(VALID_TOKEN_1, [1, 2])
    token2 = make_token(VALID_TOKEN_2, [1, 2])
    plug_in(auth, 1)
    plug_in(auth, 2)

    assert auth.on_token(token1) == O.USED_TO_START_TRANSACTION
    assert auth.on_token(token2) == O.USED_TO_START_TRANSACTION
    assert authorized(ports) == [True, True]

    auth.on_session_event(1, transaction_started(token1))
    auth.on_session_event(2, transaction_started(token2))

    assert auth.on_token(token2) == O.USED_TO_STOP_TRANSACTION
    assert auth.on_token(token1) == O.USED_TO_STOP_TRANSACTION

    expect_statuses(ports, {
        VALID_TOKEN_1: [PROCESSING, ACCEPTED, USED_TO_START, PROCESSING, USED_TO_STOP],
        VALID_TOKEN_2: [PROCESSING, ACCEPTED, USED_TO_START, PROCESSING, USED_TO_STOP],
    })
    assert authorized(ports) == [False, False]
    assert [index for index, _ in ports.stops] == [1, 0]


# --- Plug&Charge and validator EVSE lists ---------------------------------------------------


def test_plug_and_charge(auth: AuthHandler, ports: RecordingPorts) -> None:
    """A Plug&Charge token without EVSE list authorizes the plugged-in EVSE."""
    plug_in(auth, 1)

    assert auth.on_token(pnc_token(VALID_TOKEN_1)) == O.USED_TO_START_TRANSACTION

    expect_statuses(ports, {VALID_TOKEN_1: [PROCESSING, ACCEPTED, USED_TO_START]})
    assert authorized(ports) == [True, False]


def test_plug_and_charge_rejected(auth: AuthHandler, ports: RecordingPorts) -> None:
    """A rejected Plug&Charge token notifies every named EVSE of the rejection (clearing authorization)."""
    ports.authorized[0] = True  # put authorization on the EVSE to see it removed
    plug_in(auth, 1)

    assert auth.on_token(pnc_token(INVALID_TOKEN, [1, 2])) == O.REJECTED

    expect_statuses(ports, {INVALID_TOKEN: [PROCESSING, REJECTED]})
    assert authorized(ports) == [False, False]
    assert {(i, r.authorization_status) for i, _, r in ports.authorize_responses} == {
        (0, AuthorizationStatus.Invalid), (1, AuthorizationStatus.Invalid)}


def test_empty_intersection(auth: AuthHandler, ports: RecordingPorts) -> None:
    """A result for EVSE 2 only does not fit a token for EVSE 1 (NotAtThisLocation); the next result for 1 and 2 does."""
    ports.validate_fn = lambda token: [accepted(evse_ids=[2]), accepted(evse_ids=[1, 2])]
    plug_in(auth, 1)
    plug_in(auth, 2)

    assert auth.on_token(pnc_token(VALID_TOKEN_1, [1])) == O.USED_TO_START_TRANSACTION

    expect_statuses(ports, {VALID_TOKEN_1: [PROCESSING, ACCEPTED, ACCEPTED, USED_TO_START]})
    assert authorized(ports) == [True, False]
    assert [(i, r.authorization_status) for i, _, r in ports.authorize_responses] == [
        (0, AuthorizationStatus.NotAtThisLocation), (0, AuthorizationStatus.Accepted)]


# --- master pass ----------------------------------------------------------------------------


def test_master_pass_group_id(auth: AuthHandler, ports: RecordingPorts) -> None:
    """The master pass group card cannot start; a card whose parent is the master group stops the transaction."""
    auth.set_master_pass_group_id(PARENT_ID_TOKEN)
    auth.set_prioritize_authorization_over_stopping_transaction(False)
    plug_in(auth, 1)

    assert auth.on_token(make_token(PARENT_ID_TOKEN)) == O.REJECTED

    token2 = make_token(VALID_TOKEN_2)
    assert auth.on_token(token2) == O.USED_TO_START_TRANSACTION
    auth.on_session_event(1, transaction_started(token2))

    assert auth.on_token(make_token(VALID_TOKEN_1)) == O.USED_TO_STOP_TRANSACTION

    expect_statuses(ports, {
        PARENT_ID_TOKEN: [PROCESSING, REJECTED],
        VALID_TOKEN_2: [PROCESSING, ACCEPTED, USED_TO_START],
        VALID_TOKEN_1: [PROCESSING, USED_TO_STOP],
    })
    assert authorized(ports) == [False, False]
    [(index, request)] = ports.stops
    assert index == 0 and request.reason == StopTransactionReason.MasterPass


def test_token_timed_out(auth: AuthHandler, ports: RecordingPorts, clock: FakeClock) -> None:
    """An accepted token with no plug-in is TimedOut after the connection timeout, once."""
    assert auth.on_token(make_token(VALID_TOKEN_1, [1, 2])) == O.PENDING
    assert ports.statuses_of(VALID_TOKEN_1) == [PROCESSING, ACCEPTED]

    clock.advance(CONNECTION_TIMEOUT)
    clock.advance(CONNECTION_TIMEOUT + 1)  # nothing more is published afterwards

    expect_statuses(ports, {VALID_TOKEN_1: [PROCESSING, ACCEPTED, TIMED_OUT]})
    assert auth.tokens_in_process() == []


def test_plug_in_time_out(auth: AuthHandler, ports: RecordingPorts, clock: FakeClock) -> None:
    """After the plug-in timeout the EVSE needs a replug: a later token finds no EVSE."""
    plug_in(auth, 1)
    clock.advance(CONNECTION_TIMEOUT + 0.25)
    assert ports.withdrawn == [0]

    assert auth.on_token(make_token(VALID_TOKEN_1, [1])) == O.NO_CONNECTOR_AVAILABLE

    expect_statuses(ports, {VALID_TOKEN_1: [PROCESSING, REJECTED]})
    assert authorized(ports) == [False, False]


def test_plug_in_time_out_disabled(
    auth: AuthHandler, ports: RecordingPorts, clock: FakeClock
) -> None:
    """With the plug-in timeout disabled, a token long after the plug-in still authorizes."""
    auth.set_plug_in_timeout_enabled(False)
    plug_in(auth, 1)
    clock.advance(CONNECTION_TIMEOUT)

    assert auth.on_token(make_token(VALID_TOKEN_1, [1])) == O.USED_TO_START_TRANSACTION

    expect_statuses(ports, {VALID_TOKEN_1: [PROCESSING, ACCEPTED, USED_TO_START]})
    assert authorized(ports) == [True, False]
    assert ports.withdrawn == []


def test_subsequent_valid_tokens(auth: AuthHandler, ports: RecordingPorts) -> None:
    """A second valid card for an EVSE already authorized for another card finds no EVSE."""
    assert auth.on_token(make_token(VALID_TOKEN_1, [1])) == O.USED_TO_START_TRANSACTION
    assert auth.on_token(make_token(VALID_TOKEN_2, [1])) == O.NO_CONNECTOR_AVAILABLE

    expect_statuses(ports, {
        VALID_TOKEN_1: [PROCESSING, ACCEPTED, USED_TO_START],
        VALID_TOKEN_2: [PROCESSING, REJECTED],
    })
    assert authorized(ports) == [True, False]


# --- withdrawing authorization -----------------------------------------------------------------


def test_withdraw_authorization(auth: AuthHandler, ports: RecordingPorts) -> None:
    """A granted authorization without transaction is withdrawn, and its token hears so
    (Withdrawn, EVerest #2499); a second withdrawal finds nothing."""
    plug_in(auth, 1)
    assert auth.on_token(make_token(VALID_TOKEN_1, [1])) == O.USED_TO_START_TRANSACTION
    assert authorized(ports) == [True, False]

    request = WithdrawAuthorizationRequest(evse_id=1)
    assert auth.withdraw_authorization(request) == WithdrawAuthorizationResult.Accepted
    assert not ports.is_authorized(0)

    auth.on_session_event(1, deauthorized())
    assert auth.withdraw_authorization(request) == WithdrawAuthorizationResult.AuthorizationNotFound

    expect_statuses(ports, {VALID_TOKEN_1: [PROCESSING, ACCEPTED, USED_TO_START, WITHDRAWN]})
    [withdrawn] = ports.tokens_of(VALID_TOKEN_1, WITHDRAWN)
    assert withdrawn["connectors"] == [1]
    assert withdrawn["parent_id_token"]["value"] == PARENT_ID_TOKEN
    assert ports.withdrawn == [0]
    assert ports.stops == []


def test_withdraw_authorization_while_waiting_for_ev_plugin(
    auth: AuthHandler, ports: RecordingPorts
) -> None:
    """Two tokens waiting for a plug-in are each withdrawn by id token: Withdrawn, nothing sent to the EVSEs."""
    assert auth.on_token(make_token(VALID_TOKEN_1, [1, 2])) == O.PENDING
    assert auth.on_token(make_token(VALID_TOKEN_2, [1, 2])) == O.PENDING

    result1 = auth.withdraw_authorization(
        WithdrawAuthorizationRequest(id_token=id_token(VALID_TOKEN_1)))
    result2 = auth.withdraw_authorization(
        WithdrawAuthorizationRequest(id_token=id_token(VALID_TOKEN_2)))

    assert result1 == WithdrawAuthorizationResult.Accepted
    assert result2 == WithdrawAuthorizationResult.Accepted
    expect_statuses(ports, {
        VALID_TOKEN_1: [PROCESSING, ACCEPTED, WITHDRAWN],
        VALID_TOKEN_2: [PROCESSING, ACCEPTED, WITHDRAWN],
    })
    assert ports.withdrawn == [] and ports.stops == []
    assert authorized(ports) == [False, False]


def test_withdraw_authorization_while_waiting_for_ev_plugin_timeout(
    auth: AuthHandler, ports: RecordingPorts, clock: FakeClock
) -> None:
    """A withdrawal for another token leaves the waiting token alone; it times out."""
    assert auth.on_token(make_token(VALID_TOKEN_1, [1, 2])) == O.PENDING

    result = auth.withdraw_authorization(
        WithdrawAuthorizationRequest(id_token=id_token(VALID_TOKEN_2)))
    clock.advance(CONNECTION_TIMEOUT)

    assert result == WithdrawAuthorizationResult.AuthorizationNotFound
    expect_statuses(ports, {VALID_TOKEN_1: [PROCESSING, ACCEPTED, TIMED_OUT]})
    assert ports.withdrawn == [] and ports.stops == []
    assert authorized(ports) == [False, False]


def test_withdraw_authorization_during_transaction(auth: AuthHandler, ports: RecordingPorts) -> None:
    """Withdrawing during a transaction stops it (DeAuthorized) instead of withdrawing."""
    plug_in(auth, 1)
    token = make_token(VALID_TOKEN_1, [1])
    assert auth.on_token(token) == O.USED_TO_START_TRANSACTION
    assert authorized(ports) == [True, False]
    auth.on_session_event(1, transaction_started(token))

    result = auth.withdraw_authorization(
        WithdrawAuthorizationRequest(id_token=id_token(VALID_TOKEN_1)))

    assert result == WithdrawAuthorizationResult.Accepted
    expect_statuses(ports, {VALID_TOKEN_1: [PROCESSING, ACCEPTED, USED_TO_START]})
    assert ports.withdrawn == []
    [(index, request)] = ports.stops
    assert index == 0 and request.reason == StopTransactionReason.DeAuthorized


def test_two_authorization_plug_events(auth: AuthHandler, ports: RecordingPorts) -> None:
    """A token for EVSE 1 takes it; a later token for 1 or 2 gets EVSE 2 since 1 is busy."""
    token1 = make_token(VALID_TOKEN_1, [1])
    # EVerest: on_token and the plug-in run concurrently; one candidate means no wait anyway.
    assert auth.on_token(token1) == O.USED_TO_START_TRANSACTION
    plug_in(auth, 1)
    assert authorized(ports) == [True, False]

    auth.on_session_event(1, transaction_started(token1))
    assert auth.on_token(make_token(VALID_TOKEN_2, [1, 2])) == O.USED_TO_START_TRANSACTION

    expect_statuses(ports, {
        VALID_TOKEN_1: [PROCESSING, ACCEPTED, USED_TO_START],
        VALID_TOKEN_2: [PROCESSING, ACCEPTED, USED_TO_START],
    })
    assert authorized(ports) == [True, True]


def test_token_swipe_race_with_timeout(
    auth: AuthHandler, ports: RecordingPorts, clock: FakeClock
) -> None:
    """The plug-in timeout fires while the validator is busy: the token then finds no EVSE (validator advances the clock itself)."""
    plug_in(auth, 1)
    entered: list[float] = []

    def slow_validator(token):  # type: ignore[no-untyped-def]
        entered.append(clock.monotonic())
        clock.advance(0.2)  # EVerest: the validator waits 200 ms for the "timeout" thread
        # EVerest returns ValidationResult{}: a default-constructed status is Accepted.
        return [ValidationResult(authorization_status=AuthorizationStatus.Accepted),
                accepted(PARENT_ID_TOKEN)]

    ports.validate_fn = slow_validator
    clock.advance(CONNECTION_TIMEOUT - 0.2)  # EVerest sleeps (timeout - 200 ms) before swiping

    result = auth.on_token(make_token(VALID_TOKEN_1, [1]))

    assert entered == [pytest.approx(CONNECTION_TIMEOUT - 0.2)]
    assert ports.withdrawn == [0]  # the plug-in timeout fired during validation
    assert result == O.NO_CONNECTOR_AVAILABLE
    expect_statuses(ports, {VALID_TOKEN_1: [PROCESSING, REJECTED]})
    assert not ports.is_authorized(0)


# --- case-insensitive token values ----------------------------------------------------------


def test_case_insensitive_authorization(auth: AuthHandler, ports: RecordingPorts) -> None:
    """A lower-case card is validated case-insensitively and published as presented."""
    plug_in(auth, 1)
    token = make_token("valid_rfid_1", [1])
    expected = token.model_copy(deep=True)
    expected.parent_id_token = id_token(PARENT_ID_TOKEN)

    assert auth.on_token(token) == O.USED_TO_START_TRANSACTION

    expect_statuses(ports, {"valid_rfid_1": [PROCESSING, ACCEPTED, USED_TO_START]})
    assert ports.tokens_of("valid_rfid_1", ACCEPTED) == [to_wire(expected)]
    assert ports.tokens_of("valid_rfid_1", USED_TO_START) == [to_wire(expected)]
    assert authorized(ports) == [True, False]


def test_case_insensitive_stop_transaction(auth: AuthHandler, ports: RecordingPorts) -> None:
    """The same card in another letter case stops the transaction."""
    token = make_token(VALID_TOKEN_1, [1])
    stop_token = make_token("VALID_rfid_1", [1])
    plug_in(auth, 1)

    assert auth.on_token(token) == O.USED_TO_START_TRANSACTION
    assert ports.is_authorized(0)
    auth.on_session_event(1, transaction_started(token))

    assert auth.on_token(stop_token) == O.USED_TO_STOP_TRANSACTION

    expect_statuses(ports, {
        VALID_TOKEN_1: [PROCESSING, ACCEPTED, USED_TO_START],
        "VALID_rfid_1": [PROCESSING, USED_TO_STOP],
    })
    assert not ports.is_authorized(0)


def test_case_insensitive_parent_id_stop_transaction(auth: AuthHandler, ports: RecordingPorts) -> None:
    """A card of the same group stops the transaction (parent ids compared case-insensitively)."""
    token1 = make_token(VALID_TOKEN_1, [1, 2])
    plug_in(auth, 1)

    assert auth.on_token(token1) == O.USED_TO_START_TRANSACTION
    auth.on_session_event(1, transaction_started(token1))
    assert ports.is_authorized(0)

    assert auth.on_token(make_token(VALID_TOKEN_3, [1, 2])) == O.USED_TO_STOP_TRANSACTION

    expect_statuses(ports, {
        VALID_TOKEN_1: [PROCESSING, ACCEPTED, USED_TO_START],
        VALID_TOKEN_3: [PROCESSING, USED_TO_STOP],
    })
    assert not ports.is_authorized(0)


def test_case_insensitive_master_pass_group_id(auth: AuthHandler, ports: RecordingPorts) -> None:
    """A lower-case master pass group id matches an upper-case parent id."""
    auth.set_master_pass_group_id("parent_rfid")
    auth.set_prioritize_authorization_over_stopping_transaction(False)
    plug_in(auth, 1)

    assert auth.on_token(make_token("PARENT_RFID")) == O.REJECTED

    token2 = make_token(VALID_TOKEN_2)
    assert auth.on_token(token2) == O.USED_TO_START_TRANSACTION
    auth.on_session_event(1, transaction_started(token2))

    assert auth.on_token(make_token(VALID_TOKEN_1)) == O.USED_TO_STOP_TRANSACTION

    expect_statuses(ports, {
        "PARENT_RFID": [PROCESSING, REJECTED],
        VALID_TOKEN_2: [PROCESSING, ACCEPTED, USED_TO_START],
        VALID_TOKEN_1: [PROCESSING, USED_TO_STOP],
    })
    assert not ports.is_authorized(0)
    [(index, request)] = ports.stops
    assert index == 0 and request.reason == StopTransactionReason.MasterPass


def test_case_insensitive_withdraw_authorization(auth: AuthHandler, ports: RecordingPorts) -> None:
    """A withdrawal naming the card in another letter case withdraws its authorization."""
    plug_in(auth, 1)
    assert auth.on_token(make_token(VALID_TOKEN_1, [1])) == O.USED_TO_START_TRANSACTION
    assert ports.is_authorized(0)

    result = auth.withdraw_authorization(
        WithdrawAuthorizationRequest(evse_id=1, id_token=id_token("valid_RFID_1")))

    assert result == WithdrawAuthorizationResult.Accepted
    assert not ports.is_authorized(0)
    assert ports.withdrawn == [0]
    # the granted token's own value, whatever case the withdrawal used (EVerest #2499)
    expect_statuses(ports, {VALID_TOKEN_1: [PROCESSING, ACCEPTED, USED_TO_START, WITHDRAWN]})


def test_case_insensitive_reservation_matching(
    auth: AuthHandler, ports: RecordingPorts, clock: FakeClock
) -> None:
    """A reservation for "VALID_rfid_2" is used by the card "valid_RFID_2"."""
    assert auth.reserve_now(reservation(
        clock, 1, "VALID_rfid_2", evse_id=1, connector_type=ConnectorTypeEnum.cCCS2,
    )) == ReservationResult.Accepted
    auth.on_session_event(1, simple_event(SessionEventEnum.ReservationStart))
    plug_in(auth, 1)

    assert auth.on_token(make_token("valid_RFID_2", [1, 2])) == O.USED_TO_START_TRANSACTION

    expect_statuses(ports, {"valid_RFID_2": [PROCESSING, ACCEPTED, USED_TO_START]})
    assert authorized(ports) == [True, False]


# --- EVerest 2026: plug-in order (PR #2344) ---------------------------------------------------


def test_plug_events_selects_first_plugin(auth: AuthHandler, ports: RecordingPorts) -> None:
    """PlugEvents: of two plugged-in EVSEs named by the token, the one plugged in first wins."""
    plug_in(auth, 2)  # EVSE 2 first, then EVSE 1
    plug_in(auth, 1)

    assert auth.on_token(make_token(VALID_TOKEN_1, [1, 2])) == O.USED_TO_START_TRANSACTION

    expect_statuses(ports, {VALID_TOKEN_1: [PROCESSING, ACCEPTED, USED_TO_START]})
    assert authorized(ports) == [False, True]


def test_plug_events_lifo_selects_most_recent_plugin(
    make_auth: MakeAuth, ports: RecordingPorts
) -> None:
    """PlugEventsLIFO: of two plugged-in EVSEs named by the token, the one plugged in last wins."""
    auth = make_auth(everest_settings(selection_algorithm=SelectionAlgorithm.PlugEventsLIFO))
    plug_in(auth, 2)  # EVSE 2 first, then EVSE 1
    plug_in(auth, 1)

    assert auth.on_token(make_token(VALID_TOKEN_1, [1, 2])) == O.USED_TO_START_TRANSACTION

    expect_statuses(ports, {VALID_TOKEN_1: [PROCESSING, ACCEPTED, USED_TO_START]})
    assert authorized(ports) == [True, False]


# --- EVerest 2026: stop_transaction_on_reswipe (PR #2530) -------------------------------------


def test_reswipe_publishes_used_to_reauthorize(auth: AuthHandler, ports: RecordingPorts) -> None:
    """stop_transaction_on_reswipe false: the card swiped again leaves its transaction running and
    is reported UsedToReauthorize with the transaction's EVSE, on every further swipe too."""
    auth.set_stop_transaction_on_reswipe(False)
    token = make_token(VALID_TOKEN_1, [1, 2])
    plug_in(auth, 1)

    assert auth.on_token(token) == O.USED_TO_START_TRANSACTION
    assert authorized(ports) == [True, False]
    auth.on_session_event(1, transaction_started(token))

    assert auth.on_token(token) == O.USED_TO_REAUTHORIZE  # the second swipe
    assert authorized(ports) == [True, False]
    assert auth.on_token(token) == O.USED_TO_REAUTHORIZE  # and a third
    assert authorized(ports) == [True, False]

    expect_statuses(ports, {VALID_TOKEN_1: [
        PROCESSING, ACCEPTED, USED_TO_START,
        PROCESSING, USED_TO_REAUTHORIZE,
        PROCESSING, USED_TO_REAUTHORIZE]})
    for reported in ports.tokens_of(VALID_TOKEN_1, USED_TO_REAUTHORIZE):
        assert reported["connectors"] == [1]
        assert reported["parent_id_token"]["value"] == PARENT_ID_TOKEN
    assert ports.stops == []


def test_parent_id_reswipe_publishes_used_to_reauthorize(auth: AuthHandler, ports: RecordingPorts) -> None:
    """stop_transaction_on_reswipe false: a card of the same group does not stop the transaction
    either; it is reported UsedToReauthorize with the transaction's EVSE."""
    auth.set_stop_transaction_on_reswipe(False)
    token1 = make_token(VALID_TOKEN_1, [1, 2])
    token3 = make_token(VALID_TOKEN_3, [1, 2])
    plug_in(auth, 1)

    # EVerest runs the swipe and TransactionStarted in two threads and joins both
    assert auth.on_token(token1) == O.USED_TO_START_TRANSACTION
    auth.on_session_event(1, transaction_started(token1))
    assert authorized(ports) == [True, False]

    assert auth.on_token(token3) == O.USED_TO_REAUTHORIZE
    assert authorized(ports) == [True, False]

    expect_statuses(ports, {
        VALID_TOKEN_1: [PROCESSING, ACCEPTED, USED_TO_START],
        VALID_TOKEN_3: [PROCESSING, USED_TO_REAUTHORIZE],
    })
    [reported] = ports.tokens_of(VALID_TOKEN_3, USED_TO_REAUTHORIZE)
    assert reported["connectors"] == [1]
    assert reported["parent_id_token"]["value"] == PARENT_ID_TOKEN
    assert ports.stops == []


def test_master_pass_still_stops_when_reswipe_stop_disabled(
    auth: AuthHandler, ports: RecordingPorts
) -> None:
    """stop_transaction_on_reswipe false does not protect a transaction from the master pass group."""
    auth.set_master_pass_group_id(PARENT_ID_TOKEN)
    auth.set_prioritize_authorization_over_stopping_transaction(False)
    auth.set_stop_transaction_on_reswipe(False)
    plug_in(auth, 1)

    token2 = make_token(VALID_TOKEN_2)
    assert auth.on_token(token2) == O.USED_TO_START_TRANSACTION
    auth.on_session_event(1, transaction_started(token2))

    assert auth.on_token(make_token(VALID_TOKEN_1)) == O.USED_TO_STOP_TRANSACTION

    expect_statuses(ports, {
        VALID_TOKEN_2: [PROCESSING, ACCEPTED, USED_TO_START],
        VALID_TOKEN_1: [PROCESSING, USED_TO_STOP],
    })
    assert authorized(ports) == [False, False]
    [(index, request)] = ports.stops
    assert index == 0 and request.reason == StopTransactionReason.MasterPass
