"""Authorizations already granted or promised: withdrawn from outside, or updated by a validator."""

from __future__ import annotations

import structlog

from ..types import (
    ProvidedIdToken,
    StopTransactionReason,
    StopTransactionRequest,
    TokenValidationStatus,
    ValidationResultUpdate,
    WithdrawAuthorizationRequest,
    WithdrawAuthorizationResult,
    same_token,
)
from .authorize import TokenJourney
from .selection import referenced_evses
from .state import CoreState
from .tokens import TokenEvent, TokenOutcome, TokenState, withdraw_matches

log = structlog.get_logger("auth")


def withdraw_authorization(core: CoreState, journey: TokenJourney,
                           request: WithdrawAuthorizationRequest) -> WithdrawAuthorizationResult:
    """Withdraw what ``request`` names: tokens in process and EVSE authorizations."""
    with core.lock:
        evses = core.evses
        if request.evse_id is not None and request.evse_id not in evses:
            return WithdrawAuthorizationResult.EvseNotFound
        result = WithdrawAuthorizationResult.AuthorizationNotFound
        for pending in list(journey.in_process.values()):
            if withdraw_matches(request, referenced_evses(evses, pending.token),
                                pending.token.id_token):
                result = WithdrawAuthorizationResult.Accepted
                if pending.state is TokenState.WAITING_FOR_CAR:
                    journey.finish(pending, TokenOutcome.WITHDRAWN)
                else:
                    pending.move(TokenEvent.WITHDRAW)  # ends as Withdrawn once validated
        targets = [
            evse for evse in evses.values()
            if evse.authorization is not None
            and (request.evse_id is None or evse.evse_id == request.evse_id)
            and (request.id_token is None
                 or same_token(request.id_token.value, evse.authorization.id_token.value))
        ]
        for evse in targets:
            result = WithdrawAuthorizationResult.Accepted
            if evse.transaction_active:
                core.ports.stop_transaction(evse.index, StopTransactionRequest(
                    reason=StopTransactionReason.DeAuthorized))
            else:
                auth = evse.authorization
                assert auth is not None  # chosen for having one
                evse.authorization = None
                evse.cancel_timer()
                core.ports.withdraw_authorization(evse.index)
                # Its token hears of it, as a timed-out one does (EVerest #2499).
                withdrawn = auth.granted_token.model_copy()
                withdrawn.parent_id_token = auth.parent_id_token
                withdrawn.connectors = [evse.evse_id]
                journey.publish(withdrawn, TokenValidationStatus.Withdrawn)
            log.info("authorization withdrawn", evse=evse.evse_id,
                     stopped_transaction=evse.transaction_active)
        return result


def on_validation_result_update(core: CoreState, journey: TokenJourney,
                                update: ValidationResultUpdate) -> None:
    """A validator learned more about a token already granted (e.g. its parent id)."""
    with core.lock:
        evse = core.evses.get(update.connector_id)
        if evse is None or evse.authorization is None:
            log.warning("validation result update for an EVSE without authorization",
                        evse=update.connector_id)
            return
        auth = evse.authorization
        auth.status = update.validation_result.authorization_status
        auth.parent_id_token = update.validation_result.parent_id_token
        token = ProvidedIdToken(
            id_token=auth.id_token,
            authorization_type=auth.authorization_type,
            parent_id_token=auth.parent_id_token,
            connectors=[update.connector_id],
        )
        journey.publish(token, TokenValidationStatus.Accepted,
                        update.validation_result.tariff_messages)
