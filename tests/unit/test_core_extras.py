"""Core behaviour that EVerest's AuthHandler scenarios do not cover."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from auth_module.core.clock import FakeClock
from auth_module.core.evse import Connector, ConnectorEvent, ConnectorState, EvseState
from auth_module.core.gate import StartupGate
from auth_module.core.handler import AuthHandler
from auth_module.core.selection import NONE_FREE, WAIT, select_evse
from auth_module.core.tokens import TokenOutcome
from auth_module.types import (
    AuthorizationStatus,
    ConnectorTypeEnum,
    ProvidedIdToken,
    ReservationCheck,
    ReservationCheckStatus,
    ReservationResult,
    SelectionAlgorithm,
    StopTransactionReason,
    TokenValidationStatus,
    ValidationResult,
    ValidationResultUpdate,
    ReservationUpdate,
    WithdrawAuthorizationRequest,
    WithdrawAuthorizationResult,
)

from .conftest import (
    CONNECTION_TIMEOUT,
    FIXTURE_EVSES,
    PARENT_ID_TOKEN,
    VALID_TOKEN_1,
    VALID_TOKEN_2,
    VALID_TOKEN_3,
    MakeAuth,
    RecordingPorts,
    accepted,
    default_validate,
    disabled,
    enabled,
    everest_settings,
    id_token,
    invalid,
    make_token,
    reservation,
    session_finished,
    session_started,
    transaction_finished,
    transaction_started,
)

pytestmark = pytest.mark.timeout(10)

S = TokenValidationStatus
O = TokenOutcome
PROCESSING, ACCEPTED, REJECTED = S.Processing, S.Accepted, S.Rejected
TIMED_OUT, USED_TO_START, USED_TO_STOP, WITHDRAWN = S.TimedOut, S.UsedToStart, S.UsedToStop, S.Withdrawn

THREE_EVSES = [*FIXTURE_EVSES, (3, 2, [(1, ConnectorTypeEnum.cCCS2)])]


def plug_in(auth: AuthHandler, evse_id: int) -> None:
    auth.on_session_event(evse_id, session_started())


def accepted_indices(ports: RecordingPorts) -> list[int]:
    return [i for i, _, r in ports.authorize_responses
            if r.authorization_status == AuthorizationStatus.Accepted]


def start_transaction(auth: AuthHandler, evse_id: int, token: ProvidedIdToken) -> None:
    """Token already authorized on ``evse_id``: the car is there and charging starts."""
    auth.on_session_event(evse_id, transaction_started(token))


@pytest.fixture
def find_first(make_auth: MakeAuth) -> AuthHandler:
    return make_auth(everest_settings(selection_algorithm=SelectionAlgorithm.FindFirst))


# --- prevalidated tokens ----------------------------------------------------------------------


def test_prevalidated_token_skips_validators(auth: AuthHandler, ports: RecordingPorts) -> None:
    """A prevalidated token is Accepted without asking any validator, keeping its own parent id."""
    token = make_token("UNKNOWN_TO_VALIDATORS", [1], prevalidated=True, parent="GROUP_X")

    assert auth.on_token(token) == O.USED_TO_START_TRANSACTION

    assert ports.calls_named("validate") == []
    assert ports.statuses_of("UNKNOWN_TO_VALIDATORS") == [PROCESSING, ACCEPTED, USED_TO_START]
    [(index, granted, result)] = ports.authorize_responses
    assert index == 0 and result.authorization_status == AuthorizationStatus.Accepted
    assert result.parent_id_token == id_token("GROUP_X")
    assert granted.parent_id_token == id_token("GROUP_X")


def test_prevalidated_false_is_validated(auth: AuthHandler, ports: RecordingPorts) -> None:
    """prevalidated=false still goes to the validators (and is rejected by them here)."""
    assert auth.on_token(make_token("UNKNOWN", [1], prevalidated=False)) == O.REJECTED
    assert ports.calls_named("validate") == [("validate", "UNKNOWN")]


# --- token connectors intersected with the validator's evse_ids ---------------------------


def test_evse_ids_restrict_selection_to_intersection(auth: AuthHandler, ports: RecordingPorts) -> None:
    """Token for EVSEs 1+2, result only for EVSE 2: EVSE 2 is the single candidate, no plug-in wait."""
    ports.validate_fn = lambda token: [accepted(evse_ids=[2])]

    assert auth.on_token(make_token(VALID_TOKEN_1, [1, 2])) == O.USED_TO_START_TRANSACTION

    assert accepted_indices(ports) == [1]
    [used] = ports.tokens_of(VALID_TOKEN_1, USED_TO_START)
    assert used["connectors"] == [2]


def test_evse_ids_intersection_with_several_candidates(
    make_auth: MakeAuth, ports: RecordingPorts
) -> None:
    """FindFirst over three EVSEs with a result for 2 and 3 picks 2, not the first free EVSE 1."""
    auth = make_auth(everest_settings(selection_algorithm=SelectionAlgorithm.FindFirst),
                     THREE_EVSES)
    ports.validate_fn = lambda token: [accepted(evse_ids=[3, 2])]

    assert auth.on_token(make_token(VALID_TOKEN_1)) == O.USED_TO_START_TRANSACTION

    assert accepted_indices(ports) == [1]


def test_evse_ids_empty_intersection_is_not_at_this_location(
    auth: AuthHandler, ports: RecordingPorts
) -> None:
    """Token for EVSE 1 only, result only for EVSE 2: NotAtThisLocation to EVSE 1, token Rejected."""
    ports.validate_fn = lambda token: [accepted(evse_ids=[2])]
    plug_in(auth, 1)

    assert auth.on_token(make_token(VALID_TOKEN_1, [1])) == O.REJECTED

    assert ports.statuses_of(VALID_TOKEN_1) == [PROCESSING, ACCEPTED, REJECTED]
    responses = ports.authorize_responses
    assert responses and {(i, r.authorization_status) for i, _, r in responses} == {
        (0, AuthorizationStatus.NotAtThisLocation)}
    assert not ports.is_authorized(0)
    assert auth.evses[1].authorization is None


# --- FindFirst ------------------------------------------------------------------------------


def test_find_first_picks_first_available(find_first: AuthHandler, ports: RecordingPorts) -> None:
    """FindFirst without plug-in takes the first available EVSE at once; a faulted one is skipped."""
    assert find_first.on_token(make_token(VALID_TOKEN_1)) == O.USED_TO_START_TRANSACTION
    assert accepted_indices(ports) == [0]

    find_first.on_fault_raised(1)  # EVSE 1 is authorized anyway; the next token gets EVSE 2
    assert find_first.on_token(make_token(VALID_TOKEN_2)) == O.USED_TO_START_TRANSACTION
    assert accepted_indices(ports) == [0, 1]


def test_find_first_skips_faulted_evse(find_first: AuthHandler, ports: RecordingPorts) -> None:
    """With EVSE 1 faulted, FindFirst takes EVSE 2."""
    find_first.on_fault_raised(1)
    assert find_first.on_token(make_token(VALID_TOKEN_2)) == O.USED_TO_START_TRANSACTION
    assert accepted_indices(ports) == [1]


def test_find_first_prefers_plugged_in_evse(find_first: AuthHandler, ports: RecordingPorts) -> None:
    """FindFirst takes the EVSE where a car is plugged in (no transaction) over the first free one."""
    plug_in(find_first, 2)
    assert find_first.on_token(make_token(VALID_TOKEN_2)) == O.USED_TO_START_TRANSACTION
    assert accepted_indices(ports) == [1]


def test_find_first_rejects_when_the_allowed_evses_are_faulted(
        make_auth: MakeAuth, ports: RecordingPorts) -> None:
    """Faulted EVSEs are no candidates: a token allowed only there ends Rejected, and the EVSE
    that was chosen instead is told NotAtThisLocation (EVerest's empty-intersection answer)."""
    auth = make_auth(everest_settings(selection_algorithm=SelectionAlgorithm.FindFirst),
                     THREE_EVSES)
    auth.on_fault_raised(2)
    auth.on_fault_raised(3)
    ports.validate_fn = lambda token: [accepted(evse_ids=[2, 3])]

    assert auth.on_token(make_token(VALID_TOKEN_1)) == O.REJECTED

    assert ports.statuses_of(VALID_TOKEN_1) == [PROCESSING, ACCEPTED, REJECTED]
    assert [(i, r.authorization_status.value) for i, _, r in ports.authorize_responses] == [
        (0, "NotAtThisLocation")]
    assert auth.tokens_in_process() == []


def test_select_evse_pure_function() -> None:
    """select_evse: one candidate is taken as is; PlugEvents waits; FindFirst says none free."""
    def evse(evse_id: int, faulted: bool = False) -> EvseState:
        state = EvseState(evse_id=evse_id, index=evse_id - 1, connectors=[Connector(1)])
        if faulted:
            state.connectors[0].submit(ConnectorEvent.FAULTED)
        return state

    evses = {1: evse(1, faulted=True), 2: evse(2, faulted=True), 3: evse(3)}
    assert select_evse(SelectionAlgorithm.FindFirst, [1], evses, []) == 1
    assert select_evse(SelectionAlgorithm.PlugEvents, [1, 3], evses, []) == WAIT
    assert select_evse(SelectionAlgorithm.PlugEvents, [1, 3], evses, [3]) == 3
    assert select_evse(SelectionAlgorithm.FindFirst, [1, 2], evses, []) == NONE_FREE
    assert select_evse(SelectionAlgorithm.FindFirst, [1, 2, 3], evses, []) == 3


# --- timeouts -------------------------------------------------------------------------------


def test_authorization_timeout_publishes_timed_out_and_withdraws(
    auth: AuthHandler, ports: RecordingPorts, clock: FakeClock
) -> None:
    """No transaction within connection_timeout: withdraw on the EVSE, TimedOut with the granted token, EVSE free again."""
    assert auth.on_token(make_token(VALID_TOKEN_1, [1])) == O.USED_TO_START_TRANSACTION

    clock.advance(CONNECTION_TIMEOUT - 0.01)
    assert ports.withdrawn == [] and ports.final_status(VALID_TOKEN_1) == USED_TO_START
    clock.advance(0.01)

    assert ports.withdrawn == [0]
    assert ports.statuses_of(VALID_TOKEN_1) == [PROCESSING, ACCEPTED, USED_TO_START, TIMED_OUT]
    [timed_out] = ports.tokens_of(VALID_TOKEN_1, TIMED_OUT)
    assert timed_out["connectors"] == [1]
    assert timed_out["parent_id_token"]["value"] == PARENT_ID_TOKEN
    assert not ports.is_authorized(0)
    assert auth.on_token(make_token(VALID_TOKEN_2, [1])) == O.USED_TO_START_TRANSACTION


def test_transaction_start_cancels_authorization_timeout(
    auth: AuthHandler, ports: RecordingPorts, clock: FakeClock
) -> None:
    """A transaction started in time cancels the authorization timeout."""
    token = make_token(VALID_TOKEN_1, [1])
    assert auth.on_token(token) == O.USED_TO_START_TRANSACTION
    start_transaction(auth, 1, token)
    clock.advance(CONNECTION_TIMEOUT * 5)
    assert ports.withdrawn == []
    assert TIMED_OUT not in ports.statuses_of(VALID_TOKEN_1)


def test_plug_in_timeout_needs_more_than_one_evse(
    make_auth: MakeAuth, ports: RecordingPorts, clock: FakeClock
) -> None:
    """With a single EVSE there is no plug-in timeout even when enabled."""
    auth = make_auth(everest_settings(), FIXTURE_EVSES[:1])
    plug_in(auth, 1)
    clock.advance(CONNECTION_TIMEOUT * 5)

    assert ports.withdrawn == []
    assert auth.on_token(make_token(VALID_TOKEN_1, [1])) == O.USED_TO_START_TRANSACTION


def test_plug_in_timeout_with_two_evses_and_replug(
    auth: AuthHandler, ports: RecordingPorts, clock: FakeClock
) -> None:
    """With two EVSEs the plug-in timeout withdraws; unplugging and replugging makes the EVSE usable again."""
    plug_in(auth, 1)
    clock.advance(CONNECTION_TIMEOUT)
    assert ports.withdrawn == [0]
    assert auth.on_token(make_token(VALID_TOKEN_1, [1])) == O.NO_CONNECTOR_AVAILABLE

    auth.on_session_event(1, session_finished())
    plug_in(auth, 1)
    assert auth.on_token(make_token(VALID_TOKEN_1, [1])) == O.USED_TO_START_TRANSACTION


def test_parked_token_does_not_take_an_evse_authorized_meanwhile(
    auth: AuthHandler, ports: RecordingPorts
) -> None:
    """A token waiting for EVSE 1/2 ignores a plug-in at EVSE 1 once another token holds EVSE 1; it takes EVSE 2 later."""
    assert auth.on_token(make_token(VALID_TOKEN_1, [1, 2])) == O.PENDING
    assert auth.on_token(make_token(VALID_TOKEN_2, [1])) == O.USED_TO_START_TRANSACTION

    plug_in(auth, 1)  # VALID_RFID_2's car

    assert ports.final_status(VALID_TOKEN_1) is None
    assert accepted_indices(ports) == [0]
    assert auth.evses[1].authorization.id_token.value == VALID_TOKEN_2  # type: ignore[union-attr]

    plug_in(auth, 2)
    assert ports.statuses_of(VALID_TOKEN_1) == [PROCESSING, ACCEPTED, USED_TO_START]
    assert accepted_indices(ports) == [0, 1]


# --- master pass ----------------------------------------------------------------------------


def master_validator(token: ProvidedIdToken) -> list[ValidationResult]:
    value = token.id_token.value.upper()
    if value.startswith("USER"):
        return [accepted()]
    if value.startswith("MASTER"):
        return [accepted("MASTERGROUP")]
    return [invalid()]


def test_master_pass_stops_all_active_transactions(
    auth: AuthHandler, ports: RecordingPorts
) -> None:
    """A master pass card stops every active transaction (reason MasterPass) and authorizes nothing."""
    ports.validate_fn = master_validator
    auth.set_master_pass_group_id("MASTERGROUP")
    auth.set_prioritize_authorization_over_stopping_transaction(True)
    for evse_id, user in ((1, "USER_A"), (2, "USER_B")):
        plug_in(auth, evse_id)
        token = make_token(user, [evse_id])
        assert auth.on_token(token) == O.USED_TO_START_TRANSACTION
        start_transaction(auth, evse_id, token)
    responses_before = len(ports.authorize_responses)

    assert auth.on_token(make_token("MASTER_1")) == O.USED_TO_STOP_TRANSACTION

    assert [(i, r.reason) for i, r in ports.stops] == [
        (0, StopTransactionReason.MasterPass), (1, StopTransactionReason.MasterPass)]
    assert len(ports.authorize_responses) == responses_before
    assert ports.statuses_of("MASTER_1") == [PROCESSING, USED_TO_STOP]
    [stop] = ports.tokens_of("MASTER_1", USED_TO_STOP)
    assert stop["connectors"] == [1, 2]
    assert stop["parent_id_token"]["value"] == "MASTERGROUP"


def test_master_pass_never_starts(auth: AuthHandler, ports: RecordingPorts) -> None:
    """With a free EVSE and prioritize=true, a master pass card is rejected, nothing authorized."""
    ports.validate_fn = master_validator
    auth.set_master_pass_group_id("mastergroup")
    auth.set_prioritize_authorization_over_stopping_transaction(True)
    plug_in(auth, 1)

    assert auth.on_token(make_token("MASTER_1", [1])) == O.REJECTED

    assert ports.statuses_of("MASTER_1") == [PROCESSING, REJECTED]
    assert ports.authorize_responses == [] and ports.stops == []


def test_master_pass_with_nothing_to_stop(auth: AuthHandler, ports: RecordingPorts) -> None:
    """prioritize=false, no transaction: the master pass answers UsedToStop with no EVSE (as EVerest does)."""
    ports.validate_fn = master_validator
    auth.set_master_pass_group_id("MASTERGROUP")

    assert auth.on_token(make_token("MASTER_1")) == O.USED_TO_STOP_TRANSACTION

    assert ports.stops == [] and ports.authorize_responses == []
    [stop] = ports.tokens_of("MASTER_1", USED_TO_STOP)
    assert stop["connectors"] == []


def test_empty_master_pass_group_id_means_none(auth: AuthHandler, ports: RecordingPorts) -> None:
    """An empty master pass group id disables the master pass."""
    auth.set_master_pass_group_id("")
    assert auth.settings.master_pass_group_id is None


# --- prioritize authorization over stopping ----------------------------------------------


@pytest.mark.parametrize("prioritize", [True, False])
def test_prioritize_with_parent_ids(
    auth: AuthHandler, ports: RecordingPorts, prioritize: bool
) -> None:
    """A group sibling starts on the free EVSE when prioritize=true, stops the group's transaction when false."""
    auth.set_prioritize_authorization_over_stopping_transaction(prioritize)
    token1 = make_token(VALID_TOKEN_1, [1])
    plug_in(auth, 1)
    assert auth.on_token(token1) == O.USED_TO_START_TRANSACTION
    start_transaction(auth, 1, token1)
    plug_in(auth, 2)

    outcome = auth.on_token(make_token(VALID_TOKEN_3, [1, 2]))

    if prioritize:
        assert outcome == O.USED_TO_START_TRANSACTION
        assert ports.stops == []
        assert accepted_indices(ports) == [0, 1]
    else:
        assert outcome == O.USED_TO_STOP_TRANSACTION
        assert [(i, r.reason) for i, r in ports.stops] == [(0, StopTransactionReason.Local)]
        assert accepted_indices(ports) == [0]


def test_sibling_holds_evse_without_transaction_is_rejected(
    auth: AuthHandler, ports: RecordingPorts
) -> None:
    """Intended difference: a group sibling authorized without transaction makes the token end REJECTED (EVerest: ALREADY_IN_PROCESS, stuck in process)."""
    assert auth.on_token(make_token(VALID_TOKEN_1, [1])) == O.USED_TO_START_TRANSACTION

    assert auth.on_token(make_token(VALID_TOKEN_3, [1, 2])) == O.REJECTED

    assert ports.statuses_of(VALID_TOKEN_3) == [PROCESSING, REJECTED]
    [rejected] = ports.tokens_of(VALID_TOKEN_3, REJECTED)
    assert rejected["connectors"] == [1]
    assert ports.stops == []
    assert auth.tokens_in_process() == []
    # not stuck: presenting it again is handled again, not ALREADY_IN_PROCESS
    assert auth.on_token(make_token(VALID_TOKEN_3, [1, 2])) == O.REJECTED


# --- faults ---------------------------------------------------------------------------------


def test_fault_raised_and_cleared(auth: AuthHandler, ports: RecordingPorts) -> None:
    """A faulted EVSE is not authorized; once cleared it is again."""
    auth.on_fault_raised(1)
    assert auth.on_token(make_token(VALID_TOKEN_1, [1])) == O.NO_CONNECTOR_AVAILABLE
    auth.on_fault_cleared(1)
    assert auth.on_token(make_token(VALID_TOKEN_1, [1])) == O.USED_TO_START_TRANSACTION


def test_fault_faults_every_connector(auth: AuthHandler) -> None:
    """Intended difference: an Inoperative fault faults all connectors of the EVSE (EVerest: connector 1 only)."""
    auth.on_fault_raised(2)
    assert [c.connector_state for c in auth.evses[2].connectors] == [ConnectorState.FAULTED] * 2
    auth.on_fault_cleared(2)
    assert [c.connector_state for c in auth.evses[2].connectors] == [ConnectorState.AVAILABLE] * 2


def test_ignore_connector_faults(make_auth: MakeAuth, ports: RecordingPorts) -> None:
    """With ignore_connector_faults the fault changes nothing."""
    auth = make_auth(everest_settings(ignore_connector_faults=True))
    auth.on_fault_raised(1)
    assert auth.evses[1].connectors[0].connector_state == ConnectorState.AVAILABLE
    assert auth.on_token(make_token(VALID_TOKEN_1, [1])) == O.USED_TO_START_TRANSACTION


def test_fault_during_transaction(auth: AuthHandler) -> None:
    """A fault during a transaction gives FAULTED_OCCUPIED; clearing returns to OCCUPIED, unplugging to AVAILABLE."""
    token = make_token(VALID_TOKEN_1, [1])
    assert auth.on_token(token) == O.USED_TO_START_TRANSACTION
    start_transaction(auth, 1, token)
    connector = auth.evses[1].connectors[0]

    auth.on_fault_raised(1)
    assert connector.connector_state == ConnectorState.FAULTED_OCCUPIED
    auth.on_fault_cleared(1)
    assert connector.connector_state == ConnectorState.OCCUPIED
    auth.on_session_event(1, transaction_finished(token))
    auth.on_session_event(1, session_finished())
    assert connector.connector_state == ConnectorState.AVAILABLE


def test_unknown_evse_events_are_ignored(auth: AuthHandler, ports: RecordingPorts) -> None:
    """Faults and session events for unknown EVSEs change nothing and do not raise."""
    auth.on_fault_raised(9)
    auth.on_fault_cleared(9)
    auth.on_session_event(9, session_started())
    assert ports.calls == []


# --- enabled / disabled ---------------------------------------------------------------------


def test_disabled_evse_is_left_out(auth: AuthHandler, ports: RecordingPorts) -> None:
    """A disabled EVSE is not referenced: a token for it finds nothing, a token for all takes the other one."""
    auth.on_session_event(1, disabled())

    assert auth.on_token(make_token(VALID_TOKEN_1, [1])) == O.NO_CONNECTOR_AVAILABLE
    # EVSE 2 is the only EVSE left: no plug-in wait even with PlugEvents
    assert auth.on_token(make_token(VALID_TOKEN_2)) == O.USED_TO_START_TRANSACTION
    assert accepted_indices(ports) == [1]

    auth.on_session_event(1, enabled())
    assert auth.on_token(make_token(VALID_TOKEN_3, [1])) == O.USED_TO_START_TRANSACTION
    assert accepted_indices(ports) == [1, 0]


def test_disable_one_connector_of_two(auth: AuthHandler) -> None:
    """EVSE 2 stays usable with one of its two connectors disabled, not with both."""
    auth.on_session_event(2, disabled(connector_id=1))
    assert not auth.evses[2].is_unavailable() and auth.evses[2].is_available()
    auth.on_session_event(2, disabled(connector_id=2))
    assert auth.evses[2].is_unavailable() and not auth.evses[2].is_available()
    assert auth.on_token(make_token(VALID_TOKEN_1, [2])) == O.NO_CONNECTOR_AVAILABLE
    auth.on_session_event(2, enabled(connector_id=2))
    assert auth.on_token(make_token(VALID_TOKEN_1, [2])) == O.USED_TO_START_TRANSACTION


# --- withdrawing authorization ----------------------------------------------------------------


def two_authorized(auth: AuthHandler) -> None:
    assert auth.on_token(make_token(VALID_TOKEN_1, [1])) == O.USED_TO_START_TRANSACTION
    assert auth.on_token(make_token(VALID_TOKEN_2, [2])) == O.USED_TO_START_TRANSACTION


def test_withdraw_by_evse_id(auth: AuthHandler, ports: RecordingPorts) -> None:
    """Withdrawing by EVSE id touches only that EVSE."""
    two_authorized(auth)
    result = auth.withdraw_authorization(WithdrawAuthorizationRequest(evse_id=2))
    assert result == WithdrawAuthorizationResult.Accepted
    assert ports.withdrawn == [1]
    assert auth.evses[1].authorization is not None and auth.evses[2].authorization is None


def test_withdraw_by_token(auth: AuthHandler, ports: RecordingPorts) -> None:
    """Withdrawing by id token touches only the EVSE of that token."""
    two_authorized(auth)
    result = auth.withdraw_authorization(
        WithdrawAuthorizationRequest(id_token=id_token(VALID_TOKEN_1)))
    assert result == WithdrawAuthorizationResult.Accepted
    assert ports.withdrawn == [0]


def test_withdraw_by_evse_and_token(auth: AuthHandler, ports: RecordingPorts) -> None:
    """Both given: both must match."""
    two_authorized(auth)
    wrong = WithdrawAuthorizationRequest(evse_id=1, id_token=id_token(VALID_TOKEN_2))
    assert auth.withdraw_authorization(wrong) == WithdrawAuthorizationResult.AuthorizationNotFound
    assert ports.withdrawn == []
    right = WithdrawAuthorizationRequest(evse_id=2, id_token=id_token(VALID_TOKEN_2))
    assert auth.withdraw_authorization(right) == WithdrawAuthorizationResult.Accepted
    assert ports.withdrawn == [1]


def test_withdraw_neither_withdraws_everything(auth: AuthHandler, ports: RecordingPorts) -> None:
    """Neither given: every granted authorization and every token in process is withdrawn."""
    auth.add_evse(3, 2, [(1, ConnectorTypeEnum.cCCS2)])
    auth.add_evse(4, 3, [(1, ConnectorTypeEnum.cCCS2)])
    two_authorized(auth)
    assert auth.on_token(make_token(VALID_TOKEN_3, [3, 4])) == O.PENDING

    assert auth.withdraw_authorization(WithdrawAuthorizationRequest()) == \
        WithdrawAuthorizationResult.Accepted

    assert sorted(ports.withdrawn) == [0, 1]
    assert ports.final_status(VALID_TOKEN_3) == WITHDRAWN
    assert auth.tokens_in_process() == []


def test_withdraw_evse_not_found(auth: AuthHandler) -> None:
    """An unknown EVSE id answers EvseNotFound."""
    assert auth.withdraw_authorization(WithdrawAuthorizationRequest(evse_id=9)) == \
        WithdrawAuthorizationResult.EvseNotFound


def test_withdraw_authorization_not_found(auth: AuthHandler, ports: RecordingPorts) -> None:
    """Nothing granted, nothing in process: AuthorizationNotFound, nothing sent."""
    assert auth.withdraw_authorization(WithdrawAuthorizationRequest()) == \
        WithdrawAuthorizationResult.AuthorizationNotFound
    assert auth.withdraw_authorization(WithdrawAuthorizationRequest(evse_id=1)) == \
        WithdrawAuthorizationResult.AuthorizationNotFound
    assert ports.calls == []


def test_withdraw_pending_token_by_evse_id(auth: AuthHandler, ports: RecordingPorts) -> None:
    """A waiting token is withdrawn by an EVSE it references, not by one it does not."""
    auth.add_evse(3, 2, [(1, ConnectorTypeEnum.cCCS2)])
    assert auth.on_token(make_token(VALID_TOKEN_1, [1, 2])) == O.PENDING

    assert auth.withdraw_authorization(WithdrawAuthorizationRequest(evse_id=3)) == \
        WithdrawAuthorizationResult.AuthorizationNotFound
    assert ports.final_status(VALID_TOKEN_1) is None

    assert auth.withdraw_authorization(WithdrawAuthorizationRequest(evse_id=2)) == \
        WithdrawAuthorizationResult.Accepted
    assert ports.statuses_of(VALID_TOKEN_1) == [PROCESSING, ACCEPTED, WITHDRAWN]


def test_withdraw_while_validating(auth: AuthHandler, ports: RecordingPorts) -> None:
    """A withdrawal arriving while the validators are asked ends the token Withdrawn when it
    would select an EVSE: Accepted first, as EVerest publishes it."""
    answers: list[WithdrawAuthorizationResult] = []

    def validator(token: ProvidedIdToken) -> list[ValidationResult]:
        answers.append(auth.withdraw_authorization(
            WithdrawAuthorizationRequest(id_token=id_token(token.id_token.value))))
        return default_validate(token)

    ports.validate_fn = validator
    assert auth.on_token(make_token(VALID_TOKEN_1, [1])) == O.WITHDRAWN
    assert answers == [WithdrawAuthorizationResult.Accepted]
    assert ports.statuses_of(VALID_TOKEN_1) == [PROCESSING, ACCEPTED, WITHDRAWN]
    assert ports.authorize_responses == []


def test_withdrawn_while_validating_but_rejected_ends_rejected(
        auth: AuthHandler, ports: RecordingPorts) -> None:
    """A withdrawn token that no validator accepts ends Rejected: the withdrawal had nothing
    to take back."""
    def validator(token: ProvidedIdToken) -> list[ValidationResult]:
        auth.withdraw_authorization(WithdrawAuthorizationRequest(id_token=id_token(token.id_token.value)))
        return [invalid()]

    ports.validate_fn = validator
    assert auth.on_token(make_token(VALID_TOKEN_1, [1])) == O.REJECTED
    assert ports.statuses_of(VALID_TOKEN_1) == [PROCESSING, REJECTED]


def test_withdraw_request_is_not_kept(auth: AuthHandler, ports: RecordingPorts) -> None:
    """Intended difference: a withdrawal applies to tokens in process at that moment only (EVerest keeps it forever)."""
    assert auth.withdraw_authorization(
        WithdrawAuthorizationRequest(id_token=id_token(VALID_TOKEN_1))
    ) == WithdrawAuthorizationResult.AuthorizationNotFound

    assert auth.on_token(make_token(VALID_TOKEN_1, [1, 2])) == O.PENDING
    plug_in(auth, 1)
    assert ports.final_status(VALID_TOKEN_1) == USED_TO_START


def test_withdraw_during_transaction_stops_it(auth: AuthHandler, ports: RecordingPorts) -> None:
    """During a transaction a withdrawal by EVSE id stops it with reason DeAuthorized."""
    token = make_token(VALID_TOKEN_1, [1])
    assert auth.on_token(token) == O.USED_TO_START_TRANSACTION
    start_transaction(auth, 1, token)

    assert auth.withdraw_authorization(WithdrawAuthorizationRequest(evse_id=1)) == \
        WithdrawAuthorizationResult.Accepted

    [(index, request)] = ports.stops
    assert index == 0 and request.reason == StopTransactionReason.DeAuthorized
    assert request.id_tag is None
    assert ports.withdrawn == []


# --- validation result updates ----------------------------------------------------------------


def test_validation_result_update_publishes_new_parent(auth: AuthHandler, ports: RecordingPorts) -> None:
    """An update publishes Accepted with the new parent id, and the new group can then stop the transaction."""
    def validator(token: ProvidedIdToken) -> list[ValidationResult]:
        if token.id_token.value == "NEW_GROUP_CARD":
            return [accepted("NEWGROUP")]
        return default_validate(token)

    ports.validate_fn = validator
    token = make_token(VALID_TOKEN_2, [1])
    assert auth.on_token(token) == O.USED_TO_START_TRANSACTION
    start_transaction(auth, 1, token)

    auth.on_validation_result_update(ValidationResultUpdate(
        connector_id=1, validation_result=accepted("NEWGROUP")))

    assert ports.statuses_of(VALID_TOKEN_2) == [PROCESSING, ACCEPTED, USED_TO_START, ACCEPTED]
    update = ports.tokens_of(VALID_TOKEN_2, ACCEPTED)[-1]
    assert update["parent_id_token"]["value"] == "NEWGROUP"
    assert update["connectors"] == [1]
    assert update["authorization_type"] == "RFID"

    assert auth.on_token(make_token("NEW_GROUP_CARD", [1])) == O.USED_TO_STOP_TRANSACTION
    assert [i for i, _ in ports.stops] == [0]


def test_validation_result_update_without_authorization(auth: AuthHandler, ports: RecordingPorts) -> None:
    """An update for an EVSE without authorization, or an unknown EVSE, publishes nothing."""
    for evse_id in (1, 9):
        auth.on_validation_result_update(ValidationResultUpdate(
            connector_id=evse_id, validation_result=accepted("NEWGROUP")))
    assert ports.statuses == []


# --- case-insensitive token values -------------------------------------------------------


def test_case_insensitive_in_process(auth: AuthHandler, ports: RecordingPorts) -> None:
    """A token waiting for a plug-in blocks the same token in another case; withdrawal by another case works."""
    assert auth.on_token(make_token("valid_rfid_1", [1, 2])) == O.PENDING
    assert auth.on_token(make_token(VALID_TOKEN_1, [1, 2])) == O.ALREADY_IN_PROCESS
    assert auth.withdraw_authorization(WithdrawAuthorizationRequest(
        id_token=id_token("Valid_Rfid_1"))) == WithdrawAuthorizationResult.Accepted
    assert ports.statuses_of("valid_rfid_1") == [PROCESSING, ACCEPTED, WITHDRAWN]
    assert ports.statuses_of(VALID_TOKEN_1) == []


def test_case_insensitive_already_authorized(auth: AuthHandler, ports: RecordingPorts) -> None:
    """An EVSE authorized (no transaction) for a card blocks the same card in another case."""
    assert auth.on_token(make_token(VALID_TOKEN_1, [1])) == O.USED_TO_START_TRANSACTION
    assert auth.on_token(make_token("valid_rfid_1", [1])) == O.ALREADY_IN_PROCESS


def test_case_insensitive_reservations(
    auth: AuthHandler, ports: RecordingPorts, clock: FakeClock
) -> None:
    """Reservation checks and parent-id matching ignore letter case."""
    assert auth.reserve_now(reservation(clock, 7, "Some_Card", evse_id=1,
                                        parent="parent_rfid")) == ReservationResult.Accepted
    assert auth.exists_reservation(ReservationCheck(id_token="SOME_CARD", evse_id=1)) == \
        ReservationCheckStatus.ReservedForToken
    assert auth.exists_reservation(ReservationCheck(
        id_token="OTHER", evse_id=1, group_id_token="PARENT_RFID")) == \
        ReservationCheckStatus.ReservedForToken
    # VALID_RFID_3's parent is PARENT_RFID: it may use the reservation
    assert auth.on_token(make_token(VALID_TOKEN_3, [1])) == O.USED_TO_START_TRANSACTION
    _, _, result = ports.authorize_responses[-1]
    assert result.reservation_id == 7


def test_case_insensitive_stop_by_parent_stored_in_other_case(
    auth: AuthHandler, ports: RecordingPorts
) -> None:
    """The parent stored on the EVSE and the parent of the new card differ only by case: still a stop."""
    def validator(token: ProvidedIdToken) -> list[ValidationResult]:
        return [accepted("group" if token.id_token.value == "A" else "GROUP")]

    ports.validate_fn = validator
    token = make_token("A", [1])
    assert auth.on_token(token) == O.USED_TO_START_TRANSACTION
    start_transaction(auth, 1, token)
    assert auth.on_token(make_token("B", [1])) == O.USED_TO_STOP_TRANSACTION


# --- validators that fail -------------------------------------------------------------------


def test_validator_raising_rejects_token(auth: AuthHandler, ports: RecordingPorts) -> None:
    """A validator raising inside ports.validate ends the token Rejected, never silently."""
    def broken(token: ProvidedIdToken) -> list[ValidationResult]:
        raise RuntimeError("validator crashed")

    ports.validate_fn = broken
    plug_in(auth, 1)

    assert auth.on_token(make_token(VALID_TOKEN_1, [1])) == O.REJECTED

    assert ports.statuses_of(VALID_TOKEN_1) == [PROCESSING, REJECTED]
    assert auth.tokens_in_process() == []
    assert not any(ports.authorized.values())
    # and the same token can be presented again once the validator works
    ports.validate_fn = default_validate
    assert auth.on_token(make_token(VALID_TOKEN_1, [1])) == O.USED_TO_START_TRANSACTION


def test_no_validation_result_rejects(auth: AuthHandler, ports: RecordingPorts) -> None:
    """No validator answering at all ends the token Rejected."""
    ports.validate_fn = lambda token: []
    assert auth.on_token(make_token(VALID_TOKEN_1, [1])) == O.REJECTED
    assert ports.statuses_of(VALID_TOKEN_1) == [PROCESSING, REJECTED]


# --- the startup gate -------------------------------------------------------------------------


def test_startup_gate_queues_and_replays_in_order() -> None:
    """Work submitted before open() is queued, replayed in order by open(); afterwards it runs at once."""
    gate = StartupGate()
    seen: list[str] = []
    for name in ("a", "b", "c"):
        gate.submit(lambda name=name: seen.append(name))
    assert seen == [] and not gate.is_open

    assert gate.open() == 3
    assert seen == ["a", "b", "c"] and gate.is_open

    gate.submit(lambda: seen.append("d"))
    assert seen == ["a", "b", "c", "d"]
    assert gate.open() == 0


def test_startup_gate_event_during_replay_waits_its_turn() -> None:
    """An event submitted from another thread during the replay runs after the queued ones."""
    gate = StartupGate()
    seen: list[str] = []
    in_b, release_b, submitting = threading.Event(), threading.Event(), threading.Event()

    def b() -> None:
        in_b.set()
        assert release_b.wait(5)
        seen.append("b")

    gate.submit(lambda: seen.append("a"))
    gate.submit(b)
    opener = threading.Thread(target=gate.open)
    opener.start()
    assert in_b.wait(5)

    def late() -> None:
        submitting.set()
        gate.submit(lambda: seen.append("late"))

    latecomer = threading.Thread(target=late)
    latecomer.start()
    assert submitting.wait(5)
    release_b.set()
    opener.join(5)
    latecomer.join(5)
    assert seen == ["a", "b", "late"]


# --- concurrency ----------------------------------------------------------------------------


def test_concurrent_tokens_find_first(make_auth: MakeAuth, ports: RecordingPorts) -> None:
    """20 different tokens from 8 threads on 20 EVSEs (FindFirst): one final status each, no EVSE authorized twice."""
    evses = [(i, i - 1, [(1, ConnectorTypeEnum.cCCS2)]) for i in range(1, 21)]
    auth = make_auth(everest_settings(selection_algorithm=SelectionAlgorithm.FindFirst), evses)
    barrier = threading.Barrier(4)  # validations finish in groups of four, racing for the EVSEs

    def validator(token: ProvidedIdToken) -> list[ValidationResult]:
        barrier.wait(5)
        return [invalid(), accepted()]

    ports.validate_fn = validator
    tokens = [make_token(f"CARD_{n:02d}") for n in range(20)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(auth.on_token, tokens, timeout=8))

    assert outcomes == [O.USED_TO_START_TRANSACTION] * 20
    for token in tokens:
        statuses = ports.statuses_of(token.id_token.value)
        finals = [s for s in statuses if s not in (PROCESSING, ACCEPTED)]
        assert finals == [USED_TO_START], (token.id_token.value, statuses)
    granted = Counter(accepted_indices(ports))
    assert sorted(granted) == list(range(20)) and set(granted.values()) == {1}
    holders = [auth.evses[i].authorization.id_token.value for i in range(1, 21)]  # type: ignore[union-attr]
    assert sorted(holders) == sorted(t.id_token.value for t in tokens)
    used_on = [ports.tokens_of(t.id_token.value, USED_TO_START)[0]["connectors"] for t in tokens]
    assert sorted(c for [c] in used_on) == list(range(1, 21))
    assert auth.tokens_in_process() == []


def test_plug_in_after_authorization_keeps_the_authorization_timer(
        auth: AuthHandler, clock: FakeClock, ports: RecordingPorts) -> None:
    """Authorized first, car plugged in later, no transaction: the authorization times out
    with TimedOut (the plug-in timer must not replace it and leave the EVSE blocked)."""
    assert auth.on_token(make_token(VALID_TOKEN_1, [1])) == TokenOutcome.USED_TO_START_TRANSACTION
    clock.advance(CONNECTION_TIMEOUT / 2)
    auth.on_session_event(1, session_started())
    clock.advance(CONNECTION_TIMEOUT)

    assert ports.statuses_of(VALID_TOKEN_1)[-1] == S.TimedOut
    assert ports.withdrawn == [0]
    assert auth.evses[1].authorization is None
    assert not auth.evses[1].plug_in_timed_out


def test_restart_tells_the_evse_managers_again(clock: FakeClock, tmp_path) -> None:
    """After a restart each stored EVSE reservation is sent to its EVSE manager again; one
    the EVSE manager now refuses is cancelled and reported Removed."""
    from auth_module.store import ReservationStore
    from auth_module.types import ReservationUpdate

    store = ReservationStore(tmp_path / "r.json")
    first_ports = RecordingPorts()
    first = AuthHandler(everest_settings(), clock, first_ports, store)
    for evse_id, index, connectors in FIXTURE_EVSES:
        first.add_evse(evse_id, index, connectors)
    first.start()
    assert first.reserve_now(reservation(clock, 7, "TOKEN_A", evse_id=1)) == ReservationResult.Accepted
    assert first.reserve_now(reservation(clock, 8, "TOKEN_B", evse_id=2)) == ReservationResult.Accepted

    ports = RecordingPorts()
    ports.reserve_result = False  # EVSE 2's manager, say, lost its state and now refuses
    again = AuthHandler(everest_settings(), clock, ports, store)
    for evse_id, index, connectors in FIXTURE_EVSES:
        again.add_evse(evse_id, index, connectors)
    again.start()

    assert ports.calls_named("reserve") == [("reserve", 0, 7), ("reserve", 1, 8)]
    assert ("reservation_update", 7, ReservationUpdate.Removed) in ports.calls
    assert ("reservation_update", 8, ReservationUpdate.Removed) in ports.calls
    assert again.reservations.reservations() == []


def test_restart_releases_evses_no_longer_held(clock: FakeClock, tmp_path) -> None:
    """Station-wide reservations held both EVSEs (reserve -1); one of them expires while the
    module is down: after the restart no EVSE is held any more, so both are released."""

    from auth_module.store import ReservationStore
    from auth_module.types import Reservation

    store = ReservationStore(tmp_path / "r.json")

    def handler(ports: RecordingPorts, clock: FakeClock) -> AuthHandler:
        h = AuthHandler(everest_settings(), clock, ports, store)
        for evse_id, index, connectors in FIXTURE_EVSES:
            h.add_evse(evse_id, index, connectors)
        h.start()
        return h

    first_ports = RecordingPorts()
    first = handler(first_ports, clock)
    soon = (clock.utcnow() + timedelta(seconds=10)).isoformat()
    later = (clock.utcnow() + timedelta(hours=1)).isoformat()
    assert first.reserve_now(Reservation(reservation_id=1, id_token="A", expiry_time=soon)) \
        == ReservationResult.Accepted
    assert first.reserve_now(Reservation(reservation_id=2, id_token="B", expiry_time=later)) \
        == ReservationResult.Accepted
    assert sorted(first_ports.calls_named("reserve_nowait")) == [
        ("reserve_nowait", 0, -1), ("reserve_nowait", 1, -1)]

    # Down while reservation 1 expires: the next process has a new clock, 20 s later.
    ports = RecordingPorts()
    handler(ports, FakeClock(start=clock.utcnow() + timedelta(seconds=20)))
    assert sorted(ports.calls_named("cancel_reservation")) == [
        ("cancel_reservation", 0), ("cancel_reservation", 1)]
    assert ("reservation_update", 1, ReservationUpdate.Expired) in ports.calls
    assert ports.calls_named("reserve_nowait") == []


# --- validation that answers later, and the order of what goes out --------------------------


class LaterPorts(RecordingPorts):
    """Validators that answer when the test says so (as a bus validator does, on another
    thread): ``validate`` records the callback and returns at once."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[tuple[str, object]] = []

    def validate(self, token: ProvidedIdToken, on_results: object) -> None:  # type: ignore[override]
        self._record("validate", token.id_token.value)
        self.waiting.append((token.id_token.value, on_results))

    def answer(self, value: str, results: list[ValidationResult]) -> None:
        [on_results] = [cb for v, cb in self.waiting if v == value]
        on_results(results)  # type: ignore[operator]


def order_of(ports: RecordingPorts, value: str) -> list[str]:
    """The calls for one token in order, as 'validate', 'authorize_response' or a status."""
    out = []
    for call in ports.calls:
        if call[0] == "validate" and call[1] == value:
            out.append("validate")
        elif call[0] == "status" and call[1] == value:
            out.append(call[2].value)
        elif call[0] == "authorize_response" and call[2].id_token.value == value:
            out.append("authorize_response")
    return out


def test_no_thread_waits_for_a_validator_and_the_answer_finishes_the_token(
        clock: FakeClock) -> None:
    ports = LaterPorts()
    ports.add_evse_index(0)
    auth = AuthHandler(everest_settings(selection_algorithm=SelectionAlgorithm.FindFirst),
                       clock, ports, store=None)
    auth.add_evse(1, 0, [(1, ConnectorTypeEnum.cCCS2)])
    auth.start()
    assert auth.on_token(make_token(VALID_TOKEN_1)) == TokenOutcome.VALIDATING
    assert ports.statuses_of(VALID_TOKEN_1) == [TokenValidationStatus.Processing]
    assert auth.token_count == 1
    # the same card again while its validators are asked: not processed twice
    assert auth.on_token(make_token(VALID_TOKEN_1)) == TokenOutcome.ALREADY_IN_PROCESS
    ports.answer(VALID_TOKEN_1, [accepted()])
    assert ports.statuses_of(VALID_TOKEN_1) == [TokenValidationStatus.Processing,
                                                TokenValidationStatus.Accepted,
                                                TokenValidationStatus.UsedToStart]
    assert ports.is_authorized(0)
    assert auth.token_count == 0


def test_the_awaited_message_leaves_before_its_status(auth: AuthHandler,
                                                     ports: RecordingPorts) -> None:
    """validate_token before Processing, authorize_response before Accepted: the module
    that waits gets its message first; the statuses keep their own order."""
    auth.on_session_event(1, session_started())
    assert auth.on_token(make_token(VALID_TOKEN_1, connectors=[1])) == \
        TokenOutcome.USED_TO_START_TRANSACTION
    assert order_of(ports, VALID_TOKEN_1) == ["validate", "Processing", "authorize_response",
                                              "Accepted", "UsedToStart"]


def test_an_answer_faster_than_the_asking_thread_still_follows_processing(
        clock: FakeClock) -> None:
    """A validator may answer (on its own thread) before the asking thread has published
    Processing; the statuses must still read Processing, Accepted, ..."""
    ports = RecordingPorts()
    auth = AuthHandler(everest_settings(selection_algorithm=SelectionAlgorithm.FindFirst),
                       clock, ports, store=None)
    auth.add_evse(1, 0, [(1, ConnectorTypeEnum.cCCS2)])
    auth.start()

    def answer_on_another_thread(token: ProvidedIdToken, on_results: object) -> None:
        t = threading.Thread(target=on_results, args=([accepted()],))  # type: ignore[arg-type]
        t.start()
        t.join()  # the decision is taken before validate() returns

    ports.validate = answer_on_another_thread  # type: ignore[method-assign,assignment]
    auth.on_token(make_token(VALID_TOKEN_1))
    assert ports.statuses_of(VALID_TOKEN_1) == [TokenValidationStatus.Processing,
                                                TokenValidationStatus.Accepted,
                                                TokenValidationStatus.UsedToStart]


def test_withdrawn_while_validating_ends_withdrawn_when_the_answer_comes(
        clock: FakeClock) -> None:
    ports = LaterPorts()
    auth = AuthHandler(everest_settings(selection_algorithm=SelectionAlgorithm.FindFirst),
                       clock, ports, store=None)
    auth.add_evse(1, 0, [(1, ConnectorTypeEnum.cCCS2)])
    auth.start()
    assert auth.on_token(make_token(VALID_TOKEN_1)) == TokenOutcome.VALIDATING
    assert auth.withdraw_authorization(WithdrawAuthorizationRequest(
        id_token=id_token(VALID_TOKEN_1))) == WithdrawAuthorizationResult.Accepted
    ports.answer(VALID_TOKEN_1, [accepted()])
    assert ports.statuses_of(VALID_TOKEN_1)[-1] == TokenValidationStatus.Withdrawn
    assert auth.token_count == 0


# --- EVerest 2026 features, beyond its own scenarios ----------------------------------------


def test_select_evse_plug_events_lifo_and_fifo_pure() -> None:
    """PlugEvents takes the oldest plug-in among the candidates, PlugEventsLIFO the newest;
    plug-ins at EVSEs that are not candidates do not count; nothing plugged in: wait."""
    evses = {i: EvseState(evse_id=i, index=i - 1, connectors=[Connector(1)]) for i in (1, 2, 3)}
    queue = [3, 1, 2]  # EVSE 3 first, EVSE 2 last
    assert select_evse(SelectionAlgorithm.PlugEvents, [1, 2], evses, queue) == 1
    assert select_evse(SelectionAlgorithm.PlugEventsLIFO, [1, 2], evses, queue) == 2
    assert select_evse(SelectionAlgorithm.PlugEventsLIFO, [1, 3], evses, queue) == 1
    assert select_evse(SelectionAlgorithm.PlugEventsLIFO, [1, 2], evses, [3]) == WAIT


def test_plug_events_lifo_three_cars_take_turns_newest_first(
    make_auth: MakeAuth, ports: RecordingPorts
) -> None:
    """Three cars plugged in one after the other: each token goes to the newest car still waiting
    (two cards of different groups: a third of VALID_RFID_1's group would meet its authorization)."""
    auth = make_auth(everest_settings(selection_algorithm=SelectionAlgorithm.PlugEventsLIFO,
                                      plug_in_timeout_enabled=False), THREE_EVSES)
    for evse_id in (2, 3, 1):
        plug_in(auth, evse_id)
    for value in (VALID_TOKEN_1, VALID_TOKEN_2):
        assert auth.on_token(make_token(value, [1, 2, 3])) == O.USED_TO_START_TRANSACTION
    assert accepted_indices(ports) == [0, 2]  # EVSE 1 (newest), then EVSE 3


def test_plug_events_lifo_waiting_token_takes_the_car_that_comes(
    make_auth: MakeAuth, ports: RecordingPorts
) -> None:
    """A LIFO token that waits for a car takes the one plugged in next."""
    auth = make_auth(everest_settings(selection_algorithm=SelectionAlgorithm.PlugEventsLIFO))
    assert auth.on_token(make_token(VALID_TOKEN_1, [1, 2])) == O.PENDING
    plug_in(auth, 2)
    assert ports.statuses_of(VALID_TOKEN_1) == [PROCESSING, ACCEPTED, USED_TO_START]
    assert accepted_indices(ports) == [1]


def test_withdraw_granted_by_token_alone_or_everything_publishes_withdrawn(
    auth: AuthHandler, ports: RecordingPorts
) -> None:
    """Withdrawn reaches the token of every granted authorization a request withdraws, by
    token alone or with neither evse id nor token; one with a transaction is stopped instead."""
    plug_in(auth, 1)
    plug_in(auth, 2)
    token1, token2 = make_token(VALID_TOKEN_1, [1, 2]), make_token(VALID_TOKEN_2, [1, 2])
    assert auth.on_token(token1) == O.USED_TO_START_TRANSACTION
    assert auth.on_token(token2) == O.USED_TO_START_TRANSACTION

    assert auth.withdraw_authorization(
        WithdrawAuthorizationRequest(id_token=id_token("valid_rfid_1"))) == \
        WithdrawAuthorizationResult.Accepted
    assert ports.statuses_of(VALID_TOKEN_1)[-1] == WITHDRAWN
    assert ports.statuses_of(VALID_TOKEN_2)[-1] == USED_TO_START

    start_transaction(auth, 2, token2)
    assert auth.withdraw_authorization(WithdrawAuthorizationRequest()) == \
        WithdrawAuthorizationResult.Accepted
    assert ports.statuses_of(VALID_TOKEN_2)[-1] == USED_TO_START  # stopped, not withdrawn
    [(index, request)] = ports.stops
    assert index == 1 and request.reason == StopTransactionReason.DeAuthorized
    assert ports.statuses_of(VALID_TOKEN_1).count(WITHDRAWN) == 1


def test_reswipe_off_group_card_still_starts_on_a_free_evse_when_prioritized(
    make_auth: MakeAuth, ports: RecordingPorts
) -> None:
    """stop_transaction_on_reswipe false changes stops only: with prioritize true and a free
    EVSE, a card of the running transaction's group starts a charge there."""
    auth = make_auth(everest_settings(stop_transaction_on_reswipe=False,
                                      prioritize_authorization_over_stopping_transaction=True))
    plug_in(auth, 1)
    token1 = make_token(VALID_TOKEN_1, [1, 2])
    assert auth.on_token(token1) == O.USED_TO_START_TRANSACTION
    start_transaction(auth, 1, token1)
    plug_in(auth, 2)

    assert auth.on_token(make_token(VALID_TOKEN_3, [1, 2])) == O.USED_TO_START_TRANSACTION
    assert ports.statuses_of(VALID_TOKEN_3) == [PROCESSING, ACCEPTED, USED_TO_START]
    assert accepted_indices(ports) == [0, 1]
    assert ports.stops == []


def test_reswipe_off_token_keeps_its_transaction_after_an_update(
    make_auth: MakeAuth, ports: RecordingPorts
) -> None:
    """UsedToReauthorize names the transaction's EVSE and its current parent id, also after a
    validate_result_update changed that parent."""
    auth = make_auth(everest_settings(stop_transaction_on_reswipe=False))
    plug_in(auth, 1)
    token = make_token(VALID_TOKEN_2, [1, 2])
    assert auth.on_token(token) == O.USED_TO_START_TRANSACTION
    start_transaction(auth, 1, token)
    auth.on_validation_result_update(ValidationResultUpdate(
        validation_result=accepted("NEW_GROUP"), connector_id=1))

    assert auth.on_token(token) == O.USED_TO_REAUTHORIZE
    [reported] = ports.tokens_of(VALID_TOKEN_2, S.UsedToReauthorize)
    assert reported["connectors"] == [1]
    assert reported["parent_id_token"]["value"] == "NEW_GROUP"
    assert ports.stops == [] and ports.is_authorized(0)
    assert auth.tokens_in_process() == []
