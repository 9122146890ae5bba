"""The authorization logic: tokens in, decisions out. No MQTT, no threads of its own.

``AuthHandler`` is EVerest's AuthHandler reshaped around one idea: nothing in here ever
waits. A token that needs a car to be plugged in is parked as a :class:`TokenRequest` with a
timer; the plug-in event, the timer, or a withdrawal resolves it. Validators, the one slow
step, are asked with the lock released.

Copies: the core only ever reassigns top-level fields of a token or a validation result
(``connectors``, ``parent_id_token``, ``authorization_status``, ...), never mutates nested
ones, so shallow ``model_copy()`` snapshots are enough (deep copies cost ~45 µs each).

Locking discipline: one re-entrant lock, ``self._lock``, guards every piece of state here and
in the reservation book. Every public method takes it; timer callbacks take it and then check
that their timer is still the current one. Port calls made under the lock are publish-and-go
(see :mod:`.ports`), so the lock is never held across a network round trip.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from ..types import (
    AuthorizationStatus,
    AuthorizationType,
    ConnectorTypeEnum,
    IdToken,
    ProvidedIdToken,
    Reservation,
    ReservationCheck,
    ReservationCheckStatus,
    ReservationEndReason,
    ReservationResult,
    ReservationUpdate,
    SelectionAlgorithm,
    SessionEvent,
    SessionEventEnum,
    StartSessionReason,
    StopTransactionReason,
    StopTransactionRequest,
    TokenValidationStatus,
    ValidationResult,
    ValidationResultUpdate,
    WithdrawAuthorizationRequest,
    WithdrawAuthorizationResult,
    same_token,
)
from .clock import Clock
from .evse import Authorization, Connector, ConnectorEvent, EvseState
from .ports import StationPorts
from .reservations import ReservationBook
from .selection import NONE_FREE, WAIT, first_plugged, select_evse
from .tokens import FINAL_STATUS, TokenOutcome, TokenRequest, token_key, withdraw_matches

log = structlog.get_logger("auth")


@dataclass
class AuthSettings:
    """The behaviour switches of the manifest's ``config`` section."""

    selection_algorithm: SelectionAlgorithm = SelectionAlgorithm.FindFirst
    connection_timeout: int = 30
    master_pass_group_id: str | None = None
    prioritize_authorization_over_stopping_transaction: bool = True
    ignore_connector_faults: bool = False
    plug_in_timeout_enabled: bool = False


class AuthHandler:
    def __init__(
        self,
        settings: AuthSettings,
        clock: Clock,
        ports: StationPorts,
        store: Any = None,
    ) -> None:
        self.settings = settings
        if settings.master_pass_group_id == "":
            settings.master_pass_group_id = None
        self._clock = clock
        self._ports = ports
        self._lock = threading.RLock()
        self.evses: dict[int, EvseState] = {}
        self._plug_in_queue: list[int] = []
        self._in_process: dict[str, TokenRequest] = {}
        self._waiting: list[TokenRequest] = []  # parked for a plug-in, first come first served
        self._restoring = False  # reloading stored reservations at start-up
        self.reservations = ReservationBook(
            self.evses, clock, self._lock, store, self._on_reservation_ended
        )

    # --- setup ----------------------------------------------------------------------------

    @property
    def token_count(self) -> int:
        """Tokens between Processing and their final status (being validated, or waiting
        for a car). Read without the lock: a bound checked against it may be off by one."""
        return len(self._in_process)

    def add_evse(
        self, evse_id: int, index: int, connectors: Sequence[tuple[int, ConnectorTypeEnum | None]]
    ) -> None:
        if evse_id <= 0:
            raise ValueError(f"evse id must be >= 1, got {evse_id}")
        with self._lock:
            self.evses[evse_id] = EvseState(
                evse_id=evse_id,
                index=index,
                connectors=[Connector(cid, ctype) for cid, ctype in connectors] or [Connector(1)],
            )

    def start(self) -> None:
        """Everything is known: bring back stored reservations and tell the EVSEs again.

        An EVSE manager may have restarted too, so each EVSE-specific reservation is sent to
        it once more; one it now refuses is cancelled (``Removed``), as a refused
        ``reserve_now`` would have been.
        """
        with self._lock:
            self._restoring = True  # EVSEs are released once, below, not per ended reservation
            try:
                stored = self.reservations.load()
            finally:
                self._restoring = False
            restored = [(evse_id, r.reservation_id)
                        for evse_id, r in self.reservations.reservations() if evse_id is not None]
            self._sync_station_wide_reservations()
            if stored:
                # Before the restart some EVSEs may have been reserved (an expired reservation,
                # a station-wide hold) that are free now; nobody else will tell them.
                reserved = {e for e, _ in restored} | self.reservations.held_station_wide()
                for evse in self.evses.values():
                    if evse.evse_id not in reserved:
                        self._ports.cancel_reservation(evse.index)
        for evse_id, reservation_id in restored:
            if self._ports.reserve(self.evses[evse_id].index, reservation_id):
                continue
            log.warning("EVSE manager refused a restored reservation; cancelling it",
                        reservation_id=reservation_id, evse=evse_id)
            with self._lock:
                self.reservations.cancel(reservation_id, True, ReservationEndReason.Cancelled)

    # --- settings at run time ---------------------------------------------------------------

    def set_connection_timeout(self, seconds: int) -> None:
        with self._lock:
            self.settings.connection_timeout = seconds

    def set_master_pass_group_id(self, group_id: str) -> None:
        with self._lock:
            self.settings.master_pass_group_id = group_id or None

    def set_plug_in_timeout_enabled(self, enabled: bool) -> None:
        with self._lock:
            self.settings.plug_in_timeout_enabled = enabled

    def set_prioritize_authorization_over_stopping_transaction(self, value: bool) -> None:
        with self._lock:
            self.settings.prioritize_authorization_over_stopping_transaction = value

    # --- tokens ---------------------------------------------------------------------------

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
            referenced = self._referenced_evses(token)
            if self._already_in_process(token, referenced):
                log.info("token presented again while in process", token=token.id_token.value)
                return TokenOutcome.ALREADY_IN_PROCESS
            request = TokenRequest(token=token.model_copy(), referenced=referenced)
            self._in_process[request.key] = request
            early = self._before_validation(request)
            if early is not None:
                return self._finish(request, early)
        if token.prevalidated:
            return self._on_validated(request, [ValidationResult(
                authorization_status=AuthorizationStatus.Accepted,
                parent_id_token=token.parent_id_token)])
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
        if not request.announced:
            request.announced = True
            self._publish(request.token, TokenValidationStatus.Processing)
            log.info("token received", token=request.token.id_token.value,
                     auth_type=request.token.authorization_type.value,
                     evses=request.referenced)

    def _on_validated(self, request: TokenRequest, results: list[ValidationResult]) -> TokenOutcome:
        """Every validator has answered: decide, and publish the final status if known.

        Runs once per token; a second call (a port that answered and then raised) only
        returns the outcome already decided."""
        with self._lock:
            if request.outcome is not None:
                return request.outcome
            self._announce(request)
            outcome = self._after_validation(request, results)
            if outcome == TokenOutcome.PENDING:
                return outcome
            return self._finish(request, outcome)

    def on_validation_result_update(self, update: ValidationResultUpdate) -> None:
        """A validator learned more about a token already granted (e.g. its parent id)."""
        with self._lock:
            evse = self.evses.get(update.connector_id)
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
            self._publish(token, TokenValidationStatus.Accepted,
                          update.validation_result.tariff_messages)

    def _before_validation(self, request: TokenRequest) -> TokenOutcome | None:
        """What can be decided before asking any validator: a stop, or no EVSE at all."""
        token, referenced = request.token, request.referenced
        # Only a card (RFID) presented again stops its own transaction.
        if token.authorization_type == AuthorizationType.RFID:
            evse_id = self._evse_used_by(referenced, token.id_token.value)
            if evse_id is not None:
                evse = self.evses[evse_id]
                self._announce(request)
                self._ports.stop_transaction(evse.index, StopTransactionRequest(
                    reason=StopTransactionReason.Local, id_tag=token.model_copy()))
                assert evse.authorization is not None
                if evse.authorization.parent_id_token is not None:
                    token.parent_id_token = evse.authorization.parent_id_token
                token.connectors = [evse_id]
                log.info("transaction stopped by its token", evse=evse_id)
                return TokenOutcome.USED_TO_STOP_TRANSACTION

        if (not self._any_available(referenced) and not self._any_parent_id_present(referenced)
                and self.settings.master_pass_group_id is None):
            return TokenOutcome.NO_CONNECTOR_AVAILABLE

        book = self.reservations
        for evse_id in referenced:
            if not book.is_evse_reserved(evse_id) and book.is_charging_possible(evse_id):
                return None
            if book.matches_reserved_identifier(token.id_token.value, evse_id, None) is not None:
                return None
            if book.has_reservation_parent_id(evse_id):
                return None
        return TokenOutcome.NO_CONNECTOR_AVAILABLE  # everything is reserved for someone else

    def _after_validation(
        self, request: TokenRequest, results: list[ValidationResult]
    ) -> TokenOutcome:
        token, referenced, settings = request.token, request.referenced, self.settings
        try_stop = (not settings.prioritize_authorization_over_stopping_transaction
                    or not self._any_available(referenced))
        if try_stop:
            for result in results:
                if result.authorization_status != AuthorizationStatus.Accepted:
                    continue
                parent = result.parent_id_token
                if parent is None:
                    continue
                if self._is_master_pass(parent):
                    return self._stop_with_master_pass(request, parent)
                evse_id = self._evse_used_by(referenced, parent.value)
                if evse_id is not None:
                    token.connectors = [evse_id]
                    evse = self.evses[evse_id]
                    if not evse.transaction_active:
                        # Someone of the same group holds this EVSE and has not started yet.
                        # (EVerest leaves the token "in process" forever here; we end it.)
                        log.info("group authorization pending on EVSE; nothing to stop",
                                 evse=evse_id)
                        return TokenOutcome.REJECTED
                    self._ports.stop_transaction(evse.index, StopTransactionRequest(
                        reason=StopTransactionReason.Local, id_tag=token.model_copy()))
                    token.parent_id_token = parent
                    log.info("transaction stopped by a token of the same group", evse=evse_id)
                    return TokenOutcome.USED_TO_STOP_TRANSACTION

        if not self._any_available(referenced):
            return TokenOutcome.NO_CONNECTOR_AVAILABLE
        if not results:
            log.warning("no validator gave a result")
            return TokenOutcome.REJECTED
        # EVerest drops only EVSEs that already hold an authorization; we also drop faulted
        # and timed-out ones, so a lone faulted candidate is never authorized unseen.
        request.candidates = [e for e in referenced if self.evses[e].is_available()]
        request.results = [r.model_copy() for r in results]
        request.index = 0
        return self._work_through_results(request)

    def _work_through_results(self, request: TokenRequest) -> TokenOutcome:
        """Try each validation result in turn until one authorizes an EVSE.

        Re-entered from a plug-in event when a result had to wait for a car.
        """
        token = request.token
        while (request.index < len(request.results) and not request.authorized
               and request.candidates):
            result = request.current = request.results[request.index]
            if result.authorization_status == AuthorizationStatus.Accepted:
                if self._is_master_pass(result.parent_id_token):
                    log.info("master pass token may stop transactions but not start them")
                    return TokenOutcome.REJECTED
                if result.parent_id_token is not None:
                    token.parent_id_token = result.parent_id_token
                accepted = token.model_copy()  # the token as its Accepted status shows it
                if request.withdrawn:  # withdrawn while its validators were asked
                    self._publish(accepted, TokenValidationStatus.Accepted, result.tariff_messages)
                    return TokenOutcome.WITHDRAWN
                pool = self._selection_pool(request.candidates, result)
                chosen = select_evse(self.settings.selection_algorithm, pool, self.evses,
                                     self._plug_in_queue)
                if chosen == WAIT:
                    self._publish(accepted, TokenValidationStatus.Accepted, result.tariff_messages)
                    self._park(request, pool)
                    return TokenOutcome.PENDING
                if chosen == NONE_FREE:
                    self._publish(accepted, TokenValidationStatus.Accepted, result.tariff_messages)
                    return TokenOutcome.TIMEOUT
                self._offer_evse(request, chosen)  # authorize_response first: the car waits
                self._publish(accepted, TokenValidationStatus.Accepted, result.tariff_messages)
            request.index += 1

        if request.authorized:
            return TokenOutcome.USED_TO_START_TRANSACTION
        # Tell the EVSEs the token named that it was not accepted: Plug&Charge needs this
        # to leave its Authorize loop.
        for evse_id in token.connectors or []:
            if evse_id in self.evses:
                self._notify_evse(evse_id, token, request.current)
        return TokenOutcome.REJECTED

    @staticmethod
    def _selection_pool(candidates: list[int], result: ValidationResult) -> list[int]:
        """Where a validator limits the token to some EVSEs, choose among those first."""
        if result.evse_ids is None:
            return candidates
        allowed = [e for e in candidates if e in result.evse_ids]
        return allowed or candidates  # none allowed: select anyway and answer NotAtThisLocation

    def _offer_evse(self, request: TokenRequest, evse_id: int) -> None:
        """Check the chosen EVSE against the result's EVSEs and reservations, then tell it."""
        token, result, book = request.token, request.current, self.reservations
        parent = result.parent_id_token.value if result.parent_id_token else None
        reservation_id = book.matches_reserved_identifier(token.id_token.value, evse_id, parent)
        if result.evse_ids is not None and evse_id not in result.evse_ids:
            result.authorization_status = AuthorizationStatus.NotAtThisLocation
        elif reservation_id is None and not book.is_charging_possible(evse_id):
            result.authorization_status = AuthorizationStatus.NotAtThisTime
        elif reservation_id is None and not book.is_evse_reserved(evse_id):
            request.authorized = True
        elif reservation_id is not None:
            book.on_reservation_used(reservation_id)
            result.reservation_id = reservation_id
            request.authorized = True
        else:
            result.authorization_status = AuthorizationStatus.NotAtThisTime
        if request.authorized:
            token.connectors = [evse_id]
        self._notify_evse(evse_id, token, result)
        if request.authorized:  # logged after the message the EVSE waits for
            log.info("authorization given", evse=evse_id, token=token.id_token.value)

    def _park(self, request: TokenRequest, pool: list[int]) -> None:
        request.waiting_for = pool
        self._waiting.append(request)

        def expire() -> None:
            with self._lock:
                if handle.cancelled or request.outcome is not None:
                    return
                self._unpark(request)
                log.info("no car plugged in within the connection timeout",
                         token=request.token.id_token.value)
                self._finish(request, TokenOutcome.TIMEOUT)

        handle = self._clock.call_later(self.settings.connection_timeout, expire)
        request.wait_timer = handle

    def _unpark(self, request: TokenRequest) -> None:
        if request.wait_timer is not None:
            request.wait_timer.cancel()
        request.waiting_for = None
        if request in self._waiting:
            self._waiting.remove(request)

    def _wake_parked_requests(self) -> None:
        """A car was plugged in: hand it to the requests waiting for it, oldest first."""
        for request in list(self._waiting):
            if request.waiting_for is None:
                continue
            # An EVSE that was authorized for another token, faulted or disabled while this
            # one waited is not a candidate any more.
            free = [e for e in request.waiting_for if self.evses[e].is_available()]
            evse_id = first_plugged(self._plug_in_queue, free)
            if evse_id is None:
                continue
            self._unpark(request)
            self._offer_evse(request, evse_id)
            request.index += 1
            outcome = self._work_through_results(request)
            if outcome != TokenOutcome.PENDING:
                self._finish(request, outcome)

    def _stop_with_master_pass(self, request: TokenRequest, parent: IdToken) -> TokenOutcome:
        stopped = []
        for evse_id in request.referenced:
            evse = self.evses[evse_id]
            if evse.transaction_active:
                self._ports.stop_transaction(evse.index, StopTransactionRequest(
                    reason=StopTransactionReason.MasterPass,
                    id_tag=request.token.model_copy()))
                stopped.append(evse_id)
        log.info("master pass stops every transaction", evses=stopped)
        request.token.parent_id_token = parent
        request.token.connectors = stopped
        return TokenOutcome.USED_TO_STOP_TRANSACTION

    def _finish(self, request: TokenRequest, outcome: TokenOutcome) -> TokenOutcome:
        """Publish the final status once, and let the token be presented again."""
        if request.outcome is not None:
            return request.outcome
        self._announce(request)
        request.outcome = outcome
        self._unpark(request)
        if self._in_process.get(request.key) is request:
            del self._in_process[request.key]
        self._publish(request.token, FINAL_STATUS[outcome])
        log.info("token handled", token=request.token.id_token.value, outcome=outcome.value)
        return outcome

    def _notify_evse(self, evse_id: int, token: ProvidedIdToken, result: ValidationResult) -> None:
        evse = self.evses[evse_id]
        granted = token.model_copy()
        self._ports.authorize_response(evse.index, granted, result.model_copy())
        if result.authorization_status == AuthorizationStatus.Accepted:
            evse.authorization = Authorization(
                id_token=token.id_token,
                authorization_type=token.authorization_type,
                status=result.authorization_status,
                expiry_time=result.expiry_time,
                parent_id_token=result.parent_id_token,
                granted_token=granted,
            )
            self._arm_evse_timer(evse, self._authorization_expired)
            if evse_id in self._plug_in_queue:
                self._plug_in_queue.remove(evse_id)

    def _arm_evse_timer(self, evse: EvseState, on_expiry: Callable[[EvseState], None]) -> None:
        """(Re)start the EVSE's one timer: authorization timeout or plug-in timeout."""
        evse.cancel_timer()

        def fire() -> None:
            with self._lock:
                if handle.cancelled or evse.timer is not handle:
                    return
                evse.timer = None
                on_expiry(evse)

        handle = self._clock.call_later(self.settings.connection_timeout, fire)
        evse.timer = handle

    def _authorization_expired(self, evse: EvseState) -> None:
        auth = evse.authorization
        evse.authorization = None
        log.info("authorization timed out: no transaction started", evse=evse.evse_id)
        self._ports.withdraw_authorization(evse.index)
        if auth is not None:
            self._publish(auth.granted_token, TokenValidationStatus.TimedOut)

    def _plug_in_expired(self, evse: EvseState) -> None:
        log.info("plug-in timeout: replug required", evse=evse.evse_id)
        self._ports.withdraw_authorization(evse.index)
        if evse.evse_id in self._plug_in_queue:
            self._plug_in_queue.remove(evse.evse_id)
        evse.plug_in_timed_out = True

    # --- questions about the state (lock held) ---------------------------------------------

    def _referenced_evses(self, token: ProvidedIdToken) -> list[int]:
        if token.connectors is None:
            return [e for e, s in self.evses.items() if not s.is_unavailable()]
        referenced = []
        for evse_id in token.connectors:
            evse = self.evses.get(evse_id)
            if evse is None:
                log.warning("token names an EVSE that does not exist", evse=evse_id)
            elif not evse.is_unavailable() and evse_id not in referenced:
                referenced.append(evse_id)
        return referenced

    def _already_in_process(self, token: ProvidedIdToken, referenced: list[int]) -> bool:
        if token_key(token) in self._in_process:
            return True
        for evse_id in referenced:
            evse = self.evses[evse_id]
            if (evse.authorization is not None and not evse.transaction_active
                    and same_token(evse.authorization.id_token.value, token.id_token.value)):
                return True
        return False

    def _evse_used_by(self, evse_ids: list[int], value: str) -> int | None:
        """The EVSE whose authorization belongs to ``value``, as token or as parent."""
        for evse_id in evse_ids:
            auth = self.evses[evse_id].authorization
            if auth is None:
                continue
            if same_token(auth.id_token.value, value):
                return evse_id
            if auth.parent_id_token is not None and same_token(auth.parent_id_token.value, value):
                return evse_id
        return None

    def _any_available(self, evse_ids: list[int]) -> bool:
        return any(self.evses[e].is_available() for e in evse_ids)

    def _any_parent_id_present(self, evse_ids: list[int]) -> bool:
        return any(
            self.evses[e].authorization is not None
            and self.evses[e].authorization.parent_id_token is not None  # type: ignore[union-attr]
            for e in evse_ids
        )

    def _is_master_pass(self, parent: IdToken | None) -> bool:
        group = self.settings.master_pass_group_id
        return group is not None and parent is not None and same_token(parent.value, group)

    def _publish(self, token: ProvidedIdToken, status: TokenValidationStatus,
                 messages: list[dict[str, Any]] | None = None) -> None:
        self._ports.publish_token_validation_status(token.model_copy(), status,
                                                    list(messages or []))

    # --- session events and faults -----------------------------------------------------------

    def on_session_event(self, evse_id: int, event: SessionEvent) -> None:
        with self._lock:
            evse = self.evses.get(evse_id)
            if evse is None:
                log.warning("session event for an unknown EVSE", evse=evse_id)
                return
            connector_id = event.connector_id or 1
            kind = event.event
            log.debug("session event", evse=evse_id, session_event=kind.value)
            if kind == SessionEventEnum.SessionStarted:
                self._on_session_started(evse, event)
            elif kind == SessionEventEnum.TransactionStarted:
                evse.plugged_in = True
                evse.transaction_active = True
                self._connector_event(evse, connector_id, ConnectorEvent.TRANSACTION_STARTED)
                evse.cancel_timer()
                self._sync_station_wide_reservations()
            elif kind == SessionEventEnum.TransactionFinished:
                evse.transaction_active = False
                evse.authorization = None
            elif kind == SessionEventEnum.SessionFinished:
                evse.plugged_in = False
                evse.plug_in_timed_out = False
                evse.authorization = None
                self._connector_event(evse, connector_id, ConnectorEvent.SESSION_FINISHED)
                evse.cancel_timer()
                if evse_id in self._plug_in_queue:
                    self._plug_in_queue.remove(evse_id)
                self._sync_station_wide_reservations()
            elif kind == SessionEventEnum.Disabled:
                self._connector_event(evse, connector_id, ConnectorEvent.DISABLE)
                self._sync_station_wide_reservations()
            elif kind == SessionEventEnum.Enabled:
                self._connector_event(evse, connector_id, ConnectorEvent.ENABLE)
                self._sync_station_wide_reservations()
            elif kind == SessionEventEnum.Deauthorized:
                evse.authorization = None
                evse.cancel_timer()
            elif kind == SessionEventEnum.ReservationEnd:
                if self.reservations.is_evse_reserved(evse_id):
                    self.reservations.cancel_for_evse(evse_id, True)

    def _on_session_started(self, evse: EvseState, event: SessionEvent) -> None:
        started = event.session_started
        if started is None or started.reason != StartSessionReason.EVConnected:
            return
        self._plug_in_queue.append(evse.evse_id)
        evse.plugged_in = True
        log.info("car plugged in", evse=evse.evse_id)
        # The plug-in timeout asks for a token within connection_timeout; an EVSE that was
        # authorized before the car came keeps its authorization timer instead.
        if (len(self.evses) > 1 and self.settings.plug_in_timeout_enabled
                and evse.authorization is None):
            self._arm_evse_timer(evse, self._plug_in_expired)
        self._wake_parked_requests()

    def on_fault_raised(self, evse_id: int) -> None:
        """``evse_manager/Inoperative`` raised: the whole EVSE is out of service."""
        self._fault(evse_id, ConnectorEvent.FAULTED)

    def on_fault_cleared(self, evse_id: int) -> None:
        self._fault(evse_id, ConnectorEvent.ERROR_CLEARED)

    def _fault(self, evse_id: int, event: ConnectorEvent) -> None:
        with self._lock:
            evse = self.evses.get(evse_id)
            if evse is None:
                log.warning("fault report for an unknown EVSE", evse=evse_id)
                return
            log.info("EVSE fault " + ("raised" if event == ConnectorEvent.FAULTED else "cleared"),
                     evse=evse_id, ignored=self.settings.ignore_connector_faults)
            if self.settings.ignore_connector_faults:
                return
            for connector in evse.connectors:
                self._connector_event(evse, connector.id, event)
            self._sync_station_wide_reservations()

    def _connector_event(self, evse: EvseState, connector_id: int, event: ConnectorEvent) -> None:
        connector = evse.connector(connector_id)
        if connector is None:
            log.warning("event for an unknown connector", evse=evse.evse_id, connector=connector_id)
            return
        connector.submit(event)
        self.reservations.on_connector_state_changed(connector.connector_state, evse.evse_id,
                                                     connector_id)

    # --- withdrawing authorization ------------------------------------------------------------

    def withdraw_authorization(
        self, request: WithdrawAuthorizationRequest
    ) -> WithdrawAuthorizationResult:
        with self._lock:
            if request.evse_id is not None and request.evse_id not in self.evses:
                return WithdrawAuthorizationResult.EvseNotFound
            result = WithdrawAuthorizationResult.AuthorizationNotFound
            for pending in list(self._in_process.values()):
                if withdraw_matches(request, self._referenced_evses(pending.token),
                                    pending.token.id_token):
                    result = WithdrawAuthorizationResult.Accepted
                    if pending.waiting_for is not None:
                        self._finish(pending, TokenOutcome.WITHDRAWN)
                    else:
                        pending.withdrawn = True  # ends as Withdrawn once validated
            targets = [
                evse for evse in self.evses.values()
                if evse.authorization is not None
                and (request.evse_id is None or evse.evse_id == request.evse_id)
                and (request.id_token is None
                     or same_token(request.id_token.value, evse.authorization.id_token.value))
            ]
            for evse in targets:
                result = WithdrawAuthorizationResult.Accepted
                if evse.transaction_active:
                    self._ports.stop_transaction(evse.index, StopTransactionRequest(
                        reason=StopTransactionReason.DeAuthorized))
                else:
                    evse.authorization = None
                    evse.cancel_timer()
                    self._ports.withdraw_authorization(evse.index)
                log.info("authorization withdrawn", evse=evse.evse_id,
                         stopped_transaction=evse.transaction_active)
            return result

    # --- reservations -------------------------------------------------------------------------

    def reserve_now(self, reservation: Reservation) -> ReservationResult:
        evse_id = reservation.evse_id
        if evse_id is not None and evse_id < 0:
            evse_id = None
        with self._lock:
            result = self.reservations.make_reservation(evse_id, reservation)
            index = self.evses[evse_id].index if evse_id in self.evses else None
        log.info("reservation request", reservation_id=reservation.reservation_id, evse=evse_id,
                 result=result.value)
        if result != ReservationResult.Accepted:
            return result
        if index is not None and not self._ports.reserve(index, reservation.reservation_id):
            log.warning("EVSE manager refused the reservation; cancelling it",
                        reservation_id=reservation.reservation_id, evse=evse_id)
            with self._lock:
                self.reservations.cancel(reservation.reservation_id, False,
                                         ReservationEndReason.Cancelled)
            return ReservationResult.Rejected
        self._ports.publish_reservation_update(reservation.reservation_id, ReservationUpdate.Placed)
        with self._lock:
            self._sync_station_wide_reservations()
        return ReservationResult.Accepted

    def cancel_reservation(self, reservation_id: int) -> bool:
        """Cancelled from outside (OCPP): no ``reservation_update``, as EVerest does."""
        with self._lock:
            cancelled, evse_id = self.reservations.cancel(reservation_id, False,
                                                          ReservationEndReason.Cancelled)
            if cancelled:
                self._on_reservation_ended(evse_id, reservation_id,
                                           ReservationEndReason.Cancelled, False)
            return cancelled

    def exists_reservation(self, check: ReservationCheck) -> ReservationCheckStatus:
        with self._lock:
            return self.reservations.check(check.id_token, check.evse_id, check.group_id_token)

    def _on_reservation_ended(self, evse_id: int | None, reservation_id: int,
                              reason: ReservationEndReason, send_update: bool) -> None:
        if evse_id is not None and evse_id in self.evses and not self._restoring:
            self._ports.cancel_reservation(self.evses[evse_id].index)
        if send_update:
            status = {ReservationEndReason.Expired: ReservationUpdate.Expired,
                      ReservationEndReason.Cancelled: ReservationUpdate.Removed}.get(reason)
            if status is not None:
                self._ports.publish_reservation_update(reservation_id, status)
        log.info("reservation ended", reservation_id=reservation_id, evse=evse_id,
                 reason=reason.value)
        self._sync_station_wide_reservations()

    def _sync_station_wide_reservations(self) -> None:
        """Reserve (id -1) the EVSEs that station-wide reservations now need, release the rest."""
        reserve, release = self.reservations.check_global_reservations()
        for evse_id in sorted(release):
            self._ports.cancel_reservation(self.evses[evse_id].index)
        for evse_id in sorted(reserve):
            self._ports.reserve_nowait(self.evses[evse_id].index, -1)

    # --- introspection for tests and diagnostics ---------------------------------------------

    def tokens_in_process(self) -> list[str]:
        with self._lock:
            return list(self._in_process)
