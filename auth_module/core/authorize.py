"""A token's journey: validate -> select -> authorize / stop / wait for a car / reject.

Nothing here ever waits. A token that needs a car to be plugged in is parked (state
``WAITING_FOR_CAR``) with a timer; the plug-in event, the timer, or a withdrawal resolves
it. Validators, the one slow step, are asked with the lock released. A token's life is
:class:`~.tokens.TokenState`, moved only along :data:`~.tokens.TOKEN_TRANSITIONS`.

Copies: the core only ever reassigns top-level fields of a token or a validation result
(``connectors``, ``parent_id_token``, ``authorization_status``, ...), never mutates nested
ones, so shallow ``model_copy()`` snapshots are enough (deep copies cost ~45 µs each).
"""

from __future__ import annotations

from typing import Any

import structlog

from ..types import (
    AuthorizationStatus,
    AuthorizationType,
    IdToken,
    ProvidedIdToken,
    StopTransactionReason,
    StopTransactionRequest,
    TokenValidationStatus,
    ValidationResult,
    same_token,
)
from .evse import Authorization, EvseState
from .reserving import ReservationDesk
from .selection import (
    NONE_FREE,
    WAIT,
    any_available,
    any_parent_id_present,
    evse_used_by,
    plugged_for,
    referenced_evses,
    select_evse,
)
from .state import CoreState
from .tokens import (
    FINAL_STATUS,
    UNANNOUNCED,
    WITHDRAWN,
    TokenEvent,
    TokenOutcome,
    TokenRequest,
    TokenState,
    token_key,
)

log = structlog.get_logger("auth")

_ACCEPTED = AuthorizationStatus.Accepted


class TokenJourney:
    """Every token between ``Processing`` and its final status, and the steps it takes."""

    def __init__(self, core: CoreState, desk: ReservationDesk) -> None:
        self._core = core
        self._lock = core.lock
        self._evses = core.evses
        self._settings = core.settings
        self._ports = core.ports
        self._plug_in_queue = core.plug_in_queue
        self._book = desk.book
        self.in_process: dict[str, TokenRequest] = {}
        self._waiting: list[TokenRequest] = []  # parked for a plug-in, first come first served

    # --- a token arrives ------------------------------------------------------------------

    def on_token(self, token: ProvidedIdToken) -> TokenOutcome:
        """Handle one presented token, on the caller's (its own worker) thread.

        The validators are asked with the lock released; the decision is taken on the
        thread that delivers the last answer (:meth:`StationPorts.validate`), so no thread
        sits waiting for a remote validator. Returns the outcome when it is known before
        this call returns; ``VALIDATING`` when answers are still to come, or ``PENDING`` when
        the token was accepted and now waits for a car. In those two cases the final status
        is published when the token ends.

        Latency: the message someone waits for leaves first. ``validate_token`` goes out
        before the ``Processing`` status, and ``authorize_response`` before ``Accepted``;
        each status still follows at once, and the statuses keep their order
        (:meth:`_announce`).
        """
        with self._lock:
            referenced = referenced_evses(self._evses, token)
            if self._already_in_process(token, referenced):
                log.info("token presented again while in process", token=token.id_token.value)
                return TokenOutcome.ALREADY_IN_PROCESS
            request = TokenRequest(token=token.model_copy(), referenced=referenced)
            self.in_process[request.key] = request
            early = self._before_validation(request)
            if early is not None:
                return self.finish(request, early)
        if token.prevalidated:
            return self._on_validated(request, [ValidationResult(
                authorization_status=_ACCEPTED, parent_id_token=token.parent_id_token)])
        decided: list[TokenOutcome] = []

        def on_results(results: list[ValidationResult]) -> None:
            decided.append(self._on_validated(request, results))

        try:
            self._ports.validate(request.token, on_results)
        except Exception as exc:  # the port should not raise; if it does, the token ends
            log.error("validation failed", error=repr(exc))
            return self._on_validated(
                request, [ValidationResult(authorization_status=AuthorizationStatus.Unknown)])
        with self._lock:
            self._announce(request)
        return decided[0] if decided else TokenOutcome.VALIDATING

    def _announce(self, request: TokenRequest) -> None:
        """Publish ``Processing`` once, before anything else is published for the token.

        Called with the lock held by every path that publishes for a token, so the status
        sequence stays Processing, (Accepted,) final, whichever thread gets there first.
        """
        if request.state in UNANNOUNCED:
            request.move(TokenEvent.ANNOUNCE)
            self.publish(request.token, TokenValidationStatus.Processing)
            log.info("token received", token=request.token.id_token.value,
                     auth_type=request.token.authorization_type.value,
                     evses=request.referenced)

    def _before_validation(self, request: TokenRequest) -> TokenOutcome | None:
        """What can be decided before asking any validator: a stop, or no EVSE at all."""
        token, referenced = request.token, request.referenced
        # Only a card (RFID) presented again stops its own transaction.
        if token.authorization_type == AuthorizationType.RFID:
            evse_id = evse_used_by(self._evses, referenced, token.id_token.value)
            if evse_id is not None:
                evse = self._evses[evse_id]
                self._announce(request)
                stop_tag = token.model_copy()  # the token as presented, for the EVSE manager
                assert evse.authorization is not None
                if evse.authorization.parent_id_token is not None:
                    token.parent_id_token = evse.authorization.parent_id_token
                token.connectors = [evse_id]
                if not self._settings.stop_transaction_on_reswipe:
                    log.info("token of a running transaction presented again; it goes on "
                             "(stop_transaction_on_reswipe false)", evse=evse_id)
                    return TokenOutcome.USED_TO_REAUTHORIZE
                self._ports.stop_transaction(evse.index, StopTransactionRequest(
                    reason=StopTransactionReason.Local, id_tag=stop_tag))
                log.info("transaction stopped by its token", evse=evse_id)
                return TokenOutcome.USED_TO_STOP_TRANSACTION

        if (not any_available(self._evses, referenced)
                and not any_parent_id_present(self._evses, referenced)
                and self._settings.master_pass_group_id is None):
            return TokenOutcome.NO_CONNECTOR_AVAILABLE

        book = self._book
        for evse_id in referenced:
            if not book.is_evse_reserved(evse_id) and book.is_charging_possible(evse_id):
                return None
            if book.matches_reserved_identifier(token.id_token.value, evse_id, None) is not None:
                return None
            if book.has_reservation_parent_id(evse_id):
                return None
        return TokenOutcome.NO_CONNECTOR_AVAILABLE  # everything is reserved for someone else

    # --- its validators have answered -------------------------------------------------------

    def _on_validated(self, request: TokenRequest, results: list[ValidationResult]) -> TokenOutcome:
        """Every validator has answered: decide, and publish the final status if known.

        Runs once per token; a second call (a port that answered and then raised) only
        returns what was already decided."""
        with self._lock:
            if request.state is TokenState.FINISHED:
                assert request.outcome is not None
                return request.outcome
            if request.state is TokenState.WAITING_FOR_CAR:
                return TokenOutcome.PENDING
            self._announce(request)
            outcome = self._after_validation(request, results)
            if outcome == TokenOutcome.PENDING:
                return outcome
            return self.finish(request, outcome)

    def _after_validation(
        self, request: TokenRequest, results: list[ValidationResult]
    ) -> TokenOutcome:
        token, referenced, settings = request.token, request.referenced, self._settings
        try_stop = (not settings.prioritize_authorization_over_stopping_transaction
                    or not any_available(self._evses, referenced))
        if try_stop:
            for result in results:
                if result.authorization_status != _ACCEPTED:
                    continue
                parent = result.parent_id_token
                if parent is None:
                    continue
                if self._is_master_pass(parent):
                    return self._stop_with_master_pass(request, parent)
                evse_id = evse_used_by(self._evses, referenced, parent.value)
                if evse_id is not None:
                    token.connectors = [evse_id]
                    evse = self._evses[evse_id]
                    if not evse.transaction_active:
                        # Someone of the same group holds this EVSE and has not started yet.
                        # (EVerest leaves the token "in process" forever here; we end it.)
                        log.info("group authorization pending on EVSE; nothing to stop",
                                 evse=evse_id)
                        return TokenOutcome.REJECTED
                    if not settings.stop_transaction_on_reswipe:
                        token.parent_id_token = parent
                        log.info("token of a running transaction's group presented; it goes "
                                 "on (stop_transaction_on_reswipe false)", evse=evse_id)
                        return TokenOutcome.USED_TO_REAUTHORIZE
                    self._ports.stop_transaction(evse.index, StopTransactionRequest(
                        reason=StopTransactionReason.Local, id_tag=token.model_copy()))
                    token.parent_id_token = parent
                    log.info("transaction stopped by a token of the same group", evse=evse_id)
                    return TokenOutcome.USED_TO_STOP_TRANSACTION

        if not any_available(self._evses, referenced):
            return TokenOutcome.NO_CONNECTOR_AVAILABLE
        if not results:
            log.warning("no validator gave a result")
            return TokenOutcome.REJECTED
        # EVerest drops only EVSEs that already hold an authorization; we also drop faulted
        # and timed-out ones, so a lone faulted candidate is never authorized unseen.
        request.candidates = [e for e in referenced if self._evses[e].is_available()]
        request.results = [r.model_copy() for r in results]
        request.index = 0
        return self._work_through_results(request)

    def _work_through_results(self, request: TokenRequest) -> TokenOutcome:
        """Try each validation result in turn until one authorizes an EVSE.

        Re-entered from a plug-in event when a result had to wait for a car.
        """
        token = request.token
        authorized = False
        while request.index < len(request.results) and not authorized and request.candidates:
            result = request.current = request.results[request.index]
            if result.authorization_status == _ACCEPTED:
                if self._is_master_pass(result.parent_id_token):
                    log.info("master pass token may stop transactions but not start them")
                    return TokenOutcome.REJECTED
                if result.parent_id_token is not None:
                    token.parent_id_token = result.parent_id_token
                accepted = token.model_copy()  # the token as its Accepted status shows it
                if request.state in WITHDRAWN:  # withdrawn while its validators were asked
                    self.publish(accepted, TokenValidationStatus.Accepted, result.tariff_messages)
                    return TokenOutcome.WITHDRAWN
                pool = self._selection_pool(request.candidates, result)
                chosen = select_evse(self._settings.selection_algorithm, pool, self._evses,
                                     self._plug_in_queue)
                if chosen == WAIT:
                    self.publish(accepted, TokenValidationStatus.Accepted, result.tariff_messages)
                    self._park(request, pool)
                    return TokenOutcome.PENDING
                if chosen == NONE_FREE:
                    self.publish(accepted, TokenValidationStatus.Accepted, result.tariff_messages)
                    return TokenOutcome.TIMEOUT
                authorized = self._offer_evse(request, chosen)  # the car waits: it goes first
                self.publish(accepted, TokenValidationStatus.Accepted, result.tariff_messages)
            request.index += 1

        if authorized:
            return TokenOutcome.USED_TO_START_TRANSACTION
        # Tell the EVSEs the token named that it was not accepted: Plug&Charge needs this
        # to leave its Authorize loop.
        for evse_id in token.connectors or []:
            if evse_id in self._evses:
                self._notify_evse(evse_id, token, request.current)
        return TokenOutcome.REJECTED

    @staticmethod
    def _selection_pool(candidates: list[int], result: ValidationResult) -> list[int]:
        """Where a validator limits the token to some EVSEs, choose among those first."""
        if result.evse_ids is None:
            return candidates
        allowed = [e for e in candidates if e in result.evse_ids]
        return allowed or candidates  # none allowed: select anyway and answer NotAtThisLocation

    def _offer_evse(self, request: TokenRequest, evse_id: int) -> bool:
        """Check the chosen EVSE against the result's EVSEs and reservations, then tell it.
        Whether the token is now authorized there."""
        token, result, book = request.token, request.current, self._book
        parent = result.parent_id_token.value if result.parent_id_token else None
        reservation_id = book.matches_reserved_identifier(token.id_token.value, evse_id, parent)
        authorized = False
        if result.evse_ids is not None and evse_id not in result.evse_ids:
            result.authorization_status = AuthorizationStatus.NotAtThisLocation
        elif reservation_id is None and not book.is_charging_possible(evse_id):
            result.authorization_status = AuthorizationStatus.NotAtThisTime
        elif reservation_id is None and not book.is_evse_reserved(evse_id):
            authorized = True
        elif reservation_id is not None:
            book.on_reservation_used(reservation_id)
            result.reservation_id = reservation_id
            authorized = True
        else:
            result.authorization_status = AuthorizationStatus.NotAtThisTime
        if authorized:
            token.connectors = [evse_id]
        self._notify_evse(evse_id, token, result)
        if authorized:  # logged after the message the EVSE waits for
            log.info("authorization given", evse=evse_id, token=token.id_token.value)
        return authorized

    # --- waiting for a car ------------------------------------------------------------------

    def _park(self, request: TokenRequest, pool: list[int]) -> None:
        request.move(TokenEvent.PARK)
        request.waiting_for = pool
        self._waiting.append(request)

        def expire() -> None:
            with self._lock:
                if handle.cancelled or request.state is TokenState.FINISHED:
                    return
                log.info("no car plugged in within the connection timeout",
                         token=request.token.id_token.value)
                self.finish(request, TokenOutcome.TIMEOUT)

        handle = self._core.clock.call_later(self._settings.connection_timeout, expire)
        request.wait_timer = handle

    def _unpark(self, request: TokenRequest) -> None:
        if request.wait_timer is not None:
            request.wait_timer.cancel()
        request.waiting_for = None
        if request in self._waiting:
            self._waiting.remove(request)

    def wake_parked_requests(self) -> None:
        """A car was plugged in: hand it to the requests waiting for it, oldest first."""
        for request in list(self._waiting):
            if request.waiting_for is None:
                continue
            # An EVSE that was authorized for another token, faulted or disabled while this
            # one waited is not a candidate any more.
            free = [e for e in request.waiting_for if self._evses[e].is_available()]
            evse_id = plugged_for(self._settings.selection_algorithm, self._plug_in_queue, free)
            if evse_id is None:
                continue
            self._unpark(request)
            request.move(TokenEvent.CAR_ARRIVED)
            authorized = self._offer_evse(request, evse_id)
            request.index += 1
            outcome = (TokenOutcome.USED_TO_START_TRANSACTION if authorized
                       else self._work_through_results(request))
            if outcome != TokenOutcome.PENDING:
                self.finish(request, outcome)

    # --- endings ------------------------------------------------------------------------------

    def _stop_with_master_pass(self, request: TokenRequest, parent: IdToken) -> TokenOutcome:
        stopped = []
        for evse_id in request.referenced:
            evse = self._evses[evse_id]
            if evse.transaction_active:
                self._ports.stop_transaction(evse.index, StopTransactionRequest(
                    reason=StopTransactionReason.MasterPass,
                    id_tag=request.token.model_copy()))
                stopped.append(evse_id)
        log.info("master pass stops every transaction", evses=stopped)
        request.token.parent_id_token = parent
        request.token.connectors = stopped
        return TokenOutcome.USED_TO_STOP_TRANSACTION

    def finish(self, request: TokenRequest, outcome: TokenOutcome) -> TokenOutcome:
        """Publish the final status once, and let the token be presented again."""
        if request.state is TokenState.FINISHED:
            assert request.outcome is not None
            return request.outcome
        self._announce(request)
        self._unpark(request)
        request.move(TokenEvent.FINISH)
        request.outcome = outcome
        if self.in_process.get(request.key) is request:
            del self.in_process[request.key]
        self.publish(request.token, FINAL_STATUS[outcome])
        log.info("token handled", token=request.token.id_token.value, outcome=outcome.value)
        return outcome

    def _notify_evse(self, evse_id: int, token: ProvidedIdToken, result: ValidationResult) -> None:
        evse = self._evses[evse_id]
        granted = token.model_copy()
        self._ports.authorize_response(evse.index, granted, result.model_copy())
        if result.authorization_status == _ACCEPTED:
            evse.authorization = Authorization(
                id_token=token.id_token,
                authorization_type=token.authorization_type,
                status=result.authorization_status,
                expiry_time=result.expiry_time,
                parent_id_token=result.parent_id_token,
                granted_token=granted,
            )
            self._core.arm_evse_timer(evse, self._authorization_expired)
            self._core.forget_plug_in(evse_id)

    def _authorization_expired(self, evse: EvseState) -> None:
        auth = evse.authorization
        evse.authorization = None
        log.info("authorization timed out: no transaction started", evse=evse.evse_id)
        self._ports.withdraw_authorization(evse.index)
        if auth is not None:
            self.publish(auth.granted_token, TokenValidationStatus.TimedOut)

    # --- questions (lock held) ------------------------------------------------------------------

    def _already_in_process(self, token: ProvidedIdToken, referenced: list[int]) -> bool:
        if token_key(token) in self.in_process:
            return True
        for evse_id in referenced:
            evse = self._evses[evse_id]
            if (evse.authorization is not None and not evse.transaction_active
                    and same_token(evse.authorization.id_token.value, token.id_token.value)):
                return True
        return False

    def _is_master_pass(self, parent: IdToken | None) -> bool:
        group = self._settings.master_pass_group_id
        return group is not None and parent is not None and same_token(parent.value, group)

    def publish(self, token: ProvidedIdToken, status: TokenValidationStatus,
                messages: list[dict[str, Any]] | None = None) -> None:
        self._ports.publish_token_validation_status(token.model_copy(), status,
                                                    list(messages or []))

